// The CSI driver's pure parts: its config file, the pod cgroup lookup over kubelet's layouts (on
// plain directories shaped like them: only the names matter), and the inline volume's attributes.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { CsiConfigError, CsiError, csiMountId, parseCsiConfig, parseInlineVolume, podMemoryCgroup } from '../../node/csi/index';

const MiB = 1 << 20;
const UID = '6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5b';

describe('CSI config', () => {
  it('defaults put the sockets where kubelet looks', () => {
    const c = parseCsiConfig({ namespaces: { fn: 'tenant-a' } });
    expect(c.driverName).toBe('tmp.csi.ephemera.io');
    expect(c.csiSocket).toBe('/var/lib/kubelet/plugins/tmp.csi.ephemera.io/csi.sock');
    expect(c.registrationSocket).toBe('/var/lib/kubelet/plugins_registry/tmp.csi.ephemera.io-reg.sock');
    expect(c.cgroupRoot).toBe('/sys/fs/cgroup/memory');
    expect(c.defaultSizeBytes).toBeUndefined();
    expect(parseCsiConfig({ namespaces: {}, defaultSize: '256Mi' }).defaultSizeBytes).toBe(256 * MiB);
  });

  it.each([
    [{}, 'namespaces'],
    [{ namespaces: {}, namespace: {} }, 'namespace'],
    [{ namespaces: { fn: 'no spaces allowed' } }, 'namespaces.fn'],
    [{ namespaces: {}, driverName: '-bad-' }, 'driverName'],
    [{ namespaces: {}, defaultSize: 'big' }, 'defaultSize'],
    [{ namespaces: {}, cgroupRoot: 'relative' }, 'cgroupRoot'],
  ])('refuses %j naming %s', (raw, key) => {
    expect(() => parseCsiConfig(raw)).toThrow(CsiConfigError);
    expect(() => parseCsiConfig(raw)).toThrow(key);
  });
});

describe("pod cgroup lookup over kubelet's layouts", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-csi-cgroups-'));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  const layouts = [
    'kubepods/pod' + UID, // cgroupfs, Guaranteed
    'kubepods/burstable/pod' + UID,
    'kubepods/besteffort/pod' + UID,
    'kubepods.slice/kubepods-pod' + UID.replace(/-/g, '_') + '.slice', // systemd, Guaranteed
    'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod' + UID.replace(/-/g, '_') + '.slice',
    'kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod' + UID.replace(/-/g, '_') + '.slice',
  ];
  it.each(layouts)('finds %s', (rel) => {
    const base = fs.mkdtempSync(path.join(root, 'h-'));
    const dir = path.join(base, rel);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), '');
    expect(podMemoryCgroup(UID, base)).toBe(dir);
    expect(podMemoryCgroup(UID.toUpperCase(), base)).toBe(dir);
  });
  it('a missing cgroup is FAILED_PRECONDITION, a uid that is not one INVALID_ARGUMENT', () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as CsiError;
      }
      throw new Error('did not throw');
    };
    expect(err(() => podMemoryCgroup(UID, root)).code).toBe(status.FAILED_PRECONDITION);
    for (const bad of ['../../etc', `${UID}/..`, '', 'pod']) expect(err(() => podMemoryCgroup(bad, root)).code).toBe(status.INVALID_ARGUMENT);
  });
});

describe('inline volume attributes', () => {
  const pod = { 'csi.storage.k8s.io/ephemeral': 'true', 'csi.storage.k8s.io/pod.uid': UID, 'csi.storage.k8s.io/pod.name': 'fn', 'csi.storage.k8s.io/pod.namespace': 'ns' };
  it('reads Kubernetes quantities and the CLI sizes alike', () => {
    expect(parseInlineVolume({ ...pod, size: '64Mi' }).sizeQuota).toBe(64 * MiB);
    expect(parseInlineVolume({ ...pod, size: '64M' }).sizeQuota).toBe(64 * MiB);
    expect(parseInlineVolume({ ...pod, size: '1Gi', file: '40Mi', mem: '100Mi' })).toMatchObject({ sizeQuota: 1024 * MiB, profile: { peakMemoryBytes: 100 * MiB, largestFileBytes: 40 * MiB } });
    expect(parseInlineVolume(pod)).toMatchObject({ sizeQuota: undefined, profile: null, claimedTenant: undefined, podNamespace: 'ns' });
  });
  it.each([
    [{ size: '64Xi' }, 'size'],
    [{ inodes: '1e6' }, 'inodes'],
    [{ tenant: '' }, 'tenant'],
    [{ token: 'x' }, 'unknown attribute "token"'],
  ])('refuses %j naming %s', (extra, what) => {
    expect(() => parseInlineVolume({ ...pod, ...extra })).toThrow(what);
  });
  it("mount ids: kubelet's csi-<sha256> as it is, anything longer as a digest", () => {
    const kubelet = `csi-${'a'.repeat(64)}`;
    expect(csiMountId(kubelet)).toBe(`csi.${kubelet}`);
    expect(csiMountId('x'.repeat(200))).toMatch(/^csi\.h-[0-9a-f]{40}$/);
    expect(csiMountId('a/b')).not.toContain('/');
  });
});
