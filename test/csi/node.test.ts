// The CSI node plugin driven the way kubelet drives it: registration on the plugins_registry
// socket, then Identity and Node calls on the CSI socket, for an ephemeral inline volume of a pod
// whose memory cgroup is real (made at kubelet's cgroupfs layout under a root of this test's own).
//
// The requests are encoded here, by hand, from the field numbers of the CSI spec (quoted beside
// each one) and kubelet's pluginregistration api.proto, and sent as raw bytes: the plugin's own
// .proto is never loaded by this test, so a wrong field number there cannot agree with itself.
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CsiNodePlugin, parseCsiConfig } from '../../node/csi/index';
import { NodeDaemon } from '../../fusefs/daemon';
import { MemoryCgroup } from '../../fusefs/memory/cgroup';
import { cgroupV1Unavailable, createTestCgroup, killAndWait, removeAllTestCgroups, spawnInCgroup, type HeldProcess, type TestCgroup } from '../support/cgroups';
import { mountUnavailableReason } from '../support/mount';
import { bool, call, decode, enumField, map, msg, str, text } from './wire';
import { removeNodeDaemonState } from '../support/node-state';

const why = mountUnavailableReason() ?? cgroupV1Unavailable();
if (why) console.warn(`\n!!! SKIPPING CSI node plugin tests: ${why}\n`);
const MiB = 1 << 20;

// --- the requests, field numbers from the CSI spec ---------------------------------------------

// message VolumeCapability { oneof access_type { BlockVolume block = 1; MountVolume mount = 2; }
//   AccessMode access_mode = 3; }  message AccessMode { Mode mode = 1; }  SINGLE_NODE_WRITER = 1
// message MountVolume { string fs_type = 1; repeated string mount_flags = 2; }
const MOUNT_CAPABILITY = msg(5, msg(2), msg(3, enumField(1, 1)));
const BLOCK_CAPABILITY = msg(5, msg(1), msg(3, enumField(1, 1)));

interface Publish {
  volumeId?: string;
  targetPath?: string;
  capability?: Buffer | null;
  readonly?: boolean;
  context?: Record<string, string>;
}
/**
 * message NodePublishVolumeRequest { string volume_id = 1; map<string,string> publish_context = 2;
 *   string staging_target_path = 3; string target_path = 4; VolumeCapability volume_capability = 5;
 *   bool readonly = 6; map<string,string> secrets = 7; map<string,string> volume_context = 8; }
 */
const publishRequest = (p: Publish) =>
  Buffer.concat([
    ...(p.volumeId !== undefined ? [str(1, p.volumeId)] : []),
    ...(p.targetPath !== undefined ? [str(4, p.targetPath)] : []),
    ...(p.capability === null ? [] : [p.capability ?? MOUNT_CAPABILITY]),
    ...(p.readonly ? [bool(6, true)] : []),
    map(8, p.context ?? {}),
  ]);
/** message NodeUnpublishVolumeRequest { string volume_id = 1; string target_path = 2; } */
const unpublishRequest = (volumeId: string | undefined, targetPath: string | undefined) =>
  Buffer.concat([...(volumeId !== undefined ? [str(1, volumeId)] : []), ...(targetPath !== undefined ? [str(2, targetPath)] : [])]);

function memoryStat(dir: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of fs.readFileSync(path.join(dir, 'memory.stat'), 'utf8').split('\n')) {
    const [k, v] = line.split(' ');
    if (k && v) m.set(k, Number(v));
  }
  return m;
}
/** Pages of the pod's cgroup that a /tmp store can hold: shmem (memory tier) within cache (all page cache, v1). */
const charged = (dir: string) => {
  const s = memoryStat(dir);
  return { shmem: s.get('total_shmem') ?? 0, cache: s.get('total_cache') ?? 0 };
};
const fsTypeAt = (target: string): string | undefined =>
  fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .find((f) => f[1] === target)?.[2];

/** A program run with a deadline: a hung FUSE request must not hang the suite. */
function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
async function exitWithin(p: HeldProcess, ms: number): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  const r = await Promise.race([p.exited, timeout]);
  clearTimeout(timer);
  if (r === 'timeout') await killAndWait(p);
  return r;
}

describe.skipIf(why !== undefined)('CSI node plugin: ephemeral inline volumes over gRPC, as kubelet calls them', () => {
  const DRIVER = 'test.csi.ephemera.io';
  const run16 = `${process.pid}-${randomBytes(3).toString('hex')}`;
  let stateDir: string;
  let daemon: NodeDaemon;
  let plugin: CsiNodePlugin;
  let root: TestCgroup;
  let podCgroup: string;
  let csi: grpc.Client;
  let reg: grpc.Client;
  let config: ReturnType<typeof parseCsiConfig>;
  const podUid = randomUUID();
  const held: HeldProcess[] = [];
  // kubelet's own layout: /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~csi/<volume name>/mount
  const targetOf = (volumeName: string) => path.join(stateDir, 'kubelet', 'pods', podUid, 'volumes', 'kubernetes.io~csi', volumeName, 'mount');
  // kubelet's id of an inline volume: "csi-" + sha256 of pod uid, volume name and driver.
  const volumeId = () => `csi-${randomBytes(32).toString('hex')}`;
  const podContext = (extra: Record<string, string> = {}, namespace = 'team-a') => ({
    'csi.storage.k8s.io/ephemeral': 'true',
    'csi.storage.k8s.io/pod.uid': podUid,
    'csi.storage.k8s.io/pod.name': `fn-${run16}`,
    'csi.storage.k8s.io/pod.namespace': namespace,
    'csi.storage.k8s.io/serviceAccount.name': 'default',
    ...extra,
  });
  const publish = (p: Publish) => call(csi, '/csi.v1.Node/NodePublishVolume', publishRequest(p));
  const unpublish = (id: string | undefined, target: string | undefined) => call(csi, '/csi.v1.Node/NodeUnpublishVolume', unpublishRequest(id, target));
  const daemonMounts = async () => (await daemon.handle({ type: 'list' })) as unknown as { mounts: Array<{ id: string; path: string; owner: string }> };

  beforeAll(async () => {
    stateDir = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-t16-csi-'));
    fs.chmodSync(stateDir, 0o755);
    daemon = (await NodeDaemon.start({ stateDir })).daemon;
    // A memory hierarchy root of our own, with kubelet's cgroupfs layout below it.
    root = await createTestCgroup();
    podCgroup = path.join(root.dir, 'kubepods', 'burstable', `pod${podUid}`);
    fs.mkdirSync(podCgroup, { recursive: true });
    fs.writeFileSync(path.join(podCgroup, 'memory.limit_in_bytes'), String(512 * MiB));
    config = parseCsiConfig({
      driverName: DRIVER,
      nodeId: `node-${run16}`,
      namespaces: { 'team-a': 'tenant-a', 'team-b': 'tenant-b', shared: null },
      cgroupRoot: root.dir,
      csiSocket: path.join(stateDir, 'kubelet', 'plugins', DRIVER, 'csi.sock'),
      registrationDir: path.join(stateDir, 'kubelet', 'plugins_registry'),
    });
    plugin = await CsiNodePlugin.start({ config, daemonSocket: daemon.paths.socket, defaultSizeQuota: 256 * MiB });
    csi = new grpc.Client(`unix://${plugin.csiSocket}`, grpc.credentials.createInsecure());
    reg = new grpc.Client(`unix://${plugin.registrationSocket}`, grpc.credentials.createInsecure());
  }, 120_000);

  afterAll(async () => {
    for (const p of held) await killAndWait(p);
    csi?.close();
    reg?.close();
    await plugin?.close();
    if (daemon) {
      // Whatever a failed test left published: off the pod's cgroup first, then removed.
      for (const m of (await daemonMounts().catch(() => ({ mounts: [] }))).mounts) {
        await daemon.handle({ type: 'detach-cgroup', id: m.id }).catch(() => undefined);
        await daemon.handle({ type: 'remove-mount', id: m.id }).catch(() => undefined);
      }
      await daemon.stop();
    }
    await removeAllTestCgroups();
    if (stateDir) {
      removeNodeDaemonState(stateDir);
    }
  }, 120_000);

  it('registration: kubelet finds the driver in plugins_registry/<driver>-reg.sock (GetInfo) and tells it the outcome', async () => {
    expect(plugin.registrationSocket).toBe(path.join(stateDir, 'kubelet', 'plugins_registry', `${DRIVER}-reg.sock`));
    expect(fs.lstatSync(plugin.registrationSocket).isSocket()).toBe(true);
    // message PluginInfo { string type = 1; string name = 2; string endpoint = 3; repeated string supported_versions = 4; }
    const info = await call(reg, '/pluginregistration.Registration/GetInfo');
    expect(info.code, info.details).toBe(grpc.status.OK);
    expect(text(info.body, 1)).toEqual(['CSIPlugin']);
    expect(text(info.body, 2)).toEqual([DRIVER]);
    expect(text(info.body, 3)).toEqual([path.join(stateDir, 'kubelet', 'plugins', DRIVER, 'csi.sock')]);
    expect(text(info.body, 4)).toEqual(['1.0.0']);
    // message RegistrationStatus { bool plugin_registered = 1; string error = 2; }
    const refused = await call(reg, '/pluginregistration.Registration/NotifyRegistrationStatus', Buffer.concat([bool(1, false), str(2, 'version mismatch')]));
    expect(refused.code).toBe(grpc.status.OK);
    expect(plugin.registration).toMatchObject({ registered: false, error: 'version mismatch' });
    const ok = await call(reg, '/pluginregistration.Registration/NotifyRegistrationStatus', bool(1, true));
    expect(ok.code).toBe(grpc.status.OK);
    expect(plugin.registration).toMatchObject({ registered: true, error: '' });
  });

  it('Identity and node info: GetPluginInfo, GetPluginCapabilities, Probe, NodeGetInfo, NodeGetCapabilities', async () => {
    // message GetPluginInfoResponse { string name = 1; string vendor_version = 2; map<string, string> manifest = 3; }
    const info = await call(csi, '/csi.v1.Identity/GetPluginInfo');
    expect(info.code, info.details).toBe(grpc.status.OK);
    expect(text(info.body, 1)).toEqual([DRIVER]);
    expect(text(info.body, 2)[0]).toMatch(/^\d+\.\d+\.\d+$/);
    // message GetPluginCapabilitiesResponse { repeated PluginCapability capabilities = 1; }: no controller service.
    const caps = await call(csi, '/csi.v1.Identity/GetPluginCapabilities');
    expect(caps.code).toBe(grpc.status.OK);
    expect(caps.body.get(1)).toBeUndefined();
    // message ProbeResponse { .google.protobuf.BoolValue ready = 1; }  message BoolValue { bool value = 1; }
    const probe = await call(csi, '/csi.v1.Identity/Probe');
    expect(probe.code, probe.details).toBe(grpc.status.OK);
    expect(decode(probe.body.get(1)![0] as Buffer).get(1)).toEqual([1]);
    // message NodeGetInfoResponse { string node_id = 1; int64 max_volumes_per_node = 2; Topology accessible_topology = 3; }
    const node = await call(csi, '/csi.v1.Node/NodeGetInfo');
    expect(node.code).toBe(grpc.status.OK);
    expect(text(node.body, 1)).toEqual([`node-${run16}`]);
    // message NodeGetCapabilitiesResponse { repeated NodeServiceCapability capabilities = 1; }: no STAGE_UNSTAGE_VOLUME.
    const nodeCaps = await call(csi, '/csi.v1.Node/NodeGetCapabilities');
    expect(nodeCaps.code).toBe(grpc.status.OK);
    expect(nodeCaps.body.get(1)).toBeUndefined();
  });

  it("publish: the target is fuse.ephemera with the size quota; 32 MiB written by a process in the pod's cgroup is charged to it; repeated publish is OK; unpublish leaves no mount and no charge; repeated unpublish is OK", async () => {
    const id = volumeId();
    const target = targetOf('tmp');
    fs.mkdirSync(path.dirname(target), { recursive: true }); // kubelet makes the parent, the plugin the target
    const request = { volumeId: id, targetPath: target, context: podContext({ size: '64Mi', file: '40Mi', tenant: 'tenant-a' }) };
    const first = await publish(request);
    expect(first.code, first.details).toBe(grpc.status.OK);
    expect(fsTypeAt(target)).toBe('fuse.ephemera');
    const mount = (await daemonMounts()).mounts.find((m) => m.path === target)!;
    expect(mount.owner).toBe('tenant-a'); // the namespace map's tenant
    const stats = (await daemon.handle({ type: 'stats', id: mount.id })) as unknown as { mounts: Array<{ cgroup: string | null; sizeQuota: number }> };
    expect(stats.mounts[0]).toMatchObject({ cgroup: podCgroup, sizeQuota: 64 * MiB });
    const df = await run('df', ['-k', target]);
    expect(df.code, df.stderr).toBe(0);
    expect(Number(df.stdout.trim().split('\n').at(-1)!.split(/\s+/)[1]) * 1024).toBe(64 * MiB);

    // kubelet retries a publish it is unsure of: the same call is OK and changes nothing.
    const again = await publish(request);
    expect(again.code, again.details).toBe(grpc.status.OK);
    expect((await daemonMounts()).mounts.filter((m) => m.path === target)).toHaveLength(1);
    // Same target, another volume → ALREADY_EXISTS; same target and volume, other size → ALREADY_EXISTS;
    // the volume at a second target → FAILED_PRECONDITION (not MULTI_NODE).
    const other = await publish({ ...request, volumeId: volumeId() });
    expect(other.code).toBe(grpc.status.ALREADY_EXISTS);
    expect(other.details).toContain('another volume');
    const resized = await publish({ ...request, context: podContext({ size: '128Mi', file: '40Mi', tenant: 'tenant-a' }) });
    expect(resized.code).toBe(grpc.status.ALREADY_EXISTS);
    const second = targetOf('tmp2');
    fs.mkdirSync(path.dirname(second), { recursive: true });
    const twice = await publish({ ...request, targetPath: second });
    expect(twice.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(fs.existsSync(second)).toBe(false);

    // A process of the pod (in its memory cgroup before it runs a single instruction) writes 32 MiB.
    const before = charged(podCgroup);
    const writer = spawnInCgroup(MemoryCgroup.fromPath(podCgroup), 'dd', ['if=/dev/zero', `of=${path.join(target, 'data')}`, 'bs=1M', 'count=32', 'conv=fsync']);
    held.push(writer);
    expect(await exitWithin(writer, 60_000)).toBe(0);
    const after = charged(podCgroup);
    // v1's cache counts shmem too: the memory tier's pages are shmem, the disk tier's the rest.
    console.log(`[csi] 32 MiB in the pod's /tmp → pod cgroup shmem +${((after.shmem - before.shmem) / MiB).toFixed(1)} MiB, cache +${((after.cache - before.cache) / MiB).toFixed(1)} MiB`);
    expect((after.cache - before.cache) / MiB).toBeGreaterThan(31);
    // file=40Mi (the profile's largest file): new files go straight to the memory tier, as shmem of the pod.
    expect((after.shmem - before.shmem) / MiB).toBeGreaterThan(31);
    const tiers = (await daemon.handle({ type: 'stats', id: mount.id })) as unknown as { mounts: Array<{ bytes: { memory: number; disk: number } }> };
    expect(tiers.mounts[0]!.bytes).toEqual({ memory: 32 * MiB, disk: 0 });
    const read = await run('cmp', ['-n', String(32 * MiB), path.join(target, 'data'), '/dev/zero']);
    expect(read.code, read.stderr).toBe(0);

    const t0 = Date.now();
    const gone = await unpublish(id, target);
    const unpublishMs = Date.now() - t0;
    expect(gone.code, gone.details).toBe(grpc.status.OK);
    expect(fsTypeAt(target)).toBeUndefined();
    expect(fs.existsSync(target)).toBe(false); // the plugin removes the directory it made
    expect((await daemonMounts()).mounts.find((m) => m.id === mount.id)).toBeUndefined();
    const left = charged(podCgroup);
    console.log(`[csi] after unpublish (${unpublishMs} ms): pod cgroup shmem ${(left.shmem / MiB).toFixed(1)} MiB, cache ${(left.cache / MiB).toFixed(1)} MiB (before the write: ${(before.shmem / MiB).toFixed(1)} / ${(before.cache / MiB).toFixed(1)})`);
    expect(left.cache - before.cache).toBeLessThan(1 * MiB);
    expect(left.shmem - before.shmem).toBeLessThan(1 * MiB);

    const repeat = await unpublish(id, target);
    expect(repeat.code, repeat.details).toBe(grpc.status.OK);
    const never = await unpublish(volumeId(), targetOf('never-published'));
    expect(never.code, never.details).toBe(grpc.status.OK);
  }, 180_000);

  it('malformed requests → INVALID_ARGUMENT naming the field; nothing is mounted', async () => {
    const target = targetOf('bad');
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const base = { volumeId: volumeId(), targetPath: target, context: podContext() };
    const cases: Array<[string, Publish, string]> = [
      ['missing volume_id', { ...base, volumeId: undefined }, 'volume_id'],
      ['missing target_path', { ...base, targetPath: undefined }, 'target_path'],
      ['relative target_path', { ...base, targetPath: 'pods/x/mount' }, 'target_path'],
      ['missing volume_capability', { ...base, capability: null }, 'volume_capability'],
      ['block access', { ...base, capability: BLOCK_CAPABILITY }, 'block'],
      ['readonly', { ...base, readonly: true }, 'readonly'],
      ['not ephemeral (a persistent volume)', { ...base, context: { size: '64Mi' } }, 'csi.storage.k8s.io/ephemeral'],
      ['no pod info (podInfoOnMount: false)', { ...base, context: { 'csi.storage.k8s.io/ephemeral': 'true' } }, 'podInfoOnMount'],
      ['a pod uid that is a path', { ...base, context: podContext({ 'csi.storage.k8s.io/pod.uid': '../../../etc' }) }, 'pod.uid'],
      ['bad size', { ...base, context: podContext({ size: 'lots' }) }, 'size'],
      ['size 0', { ...base, context: podContext({ size: '0' }) }, 'size'],
      ['unknown attribute', { ...base, context: podContext({ sise: '64Mi' }) }, 'sise'],
      ['unknown namespace', { ...base, context: podContext({}, 'nobody') }, 'namespace nobody'],
    ];
    for (const [what, req, field] of cases) {
      const r = await publish(req);
      expect({ what, code: grpc.status[r.code] }).toEqual({ what, code: 'INVALID_ARGUMENT' });
      expect(r.details, what).toContain(field);
    }
    const noId = await unpublish(undefined, target);
    expect(noId.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noId.details).toContain('volume_id');
    const noTarget = await unpublish(base.volumeId, undefined);
    expect(noTarget.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noTarget.details).toContain('target_path');
    expect(fsTypeAt(target)).toBeUndefined();
    expect((await daemonMounts()).mounts.filter((m) => m.id.startsWith('csi.'))).toEqual([]);
  });

  it("a tenant attribute that disagrees with the namespace map is refused; a namespace mapped to null gets a /tmp without a tenant", async () => {
    const target = targetOf('claims');
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const claims = await publish({ volumeId: volumeId(), targetPath: target, context: podContext({ tenant: 'tenant-b' }) });
    expect(claims.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(claims.details).toContain('volumeAttributes.tenant=tenant-b is not the tenant of namespace team-a');
    expect(claims.details).not.toContain('tenant-a'); // the pod's author is not told whose namespace it is
    expect(fsTypeAt(target)).toBeUndefined();
    const claimsInShared = await publish({ volumeId: volumeId(), targetPath: target, context: podContext({ tenant: 'tenant-a' }, 'shared') });
    expect(claimsInShared.code).toBe(grpc.status.PERMISSION_DENIED);

    const id = volumeId();
    const open = await publish({ volumeId: id, targetPath: target, context: podContext({}, 'shared') });
    expect(open.code, open.details).toBe(grpc.status.OK);
    expect((await daemonMounts()).mounts.find((m) => m.path === target)?.owner).toBe('untenanted');
    expect((await unpublish(id, target)).code).toBe(grpc.status.OK);
    expect(fsTypeAt(target)).toBeUndefined();
  }, 60_000);

  it('a restarted plugin knows what it published (the node daemon is the state): publish again is OK, unpublish cleans up', async () => {
    const id = volumeId();
    const target = targetOf('restart');
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const request = { volumeId: id, targetPath: target, context: podContext({ size: '32Mi' }) };
    expect((await publish(request)).code).toBe(grpc.status.OK);
    csi.close();
    reg.close();
    await plugin.close();
    expect(fs.existsSync(plugin.csiSocket)).toBe(false);
    expect(fsTypeAt(target)).toBe('fuse.ephemera'); // the pod keeps its /tmp while the plugin restarts
    plugin = await CsiNodePlugin.start({ config, daemonSocket: daemon.paths.socket, defaultSizeQuota: 256 * MiB });
    csi = new grpc.Client(`unix://${plugin.csiSocket}`, grpc.credentials.createInsecure());
    reg = new grpc.Client(`unix://${plugin.registrationSocket}`, grpc.credentials.createInsecure());
    const again = await publish(request);
    expect(again.code, again.details).toBe(grpc.status.OK);
    const other = await publish({ ...request, volumeId: volumeId() });
    expect(other.code).toBe(grpc.status.ALREADY_EXISTS);
    const gone = await unpublish(id, target);
    expect(gone.code, gone.details).toBe(grpc.status.OK);
    expect(fsTypeAt(target)).toBeUndefined();
    expect(fs.existsSync(target)).toBe(false);
  }, 60_000);

  it('a pod whose cgroup kubelet has not made → FAILED_PRECONDITION naming where it looked (kubelet retries)', async () => {
    const target = targetOf('nocgroup');
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const stranger = randomUUID();
    const r = await publish({ volumeId: volumeId(), targetPath: target, context: podContext({ 'csi.storage.k8s.io/pod.uid': stranger }) });
    expect(r.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(r.details).toContain(`kubepods/burstable/pod${stranger}`);
    expect(fs.existsSync(target)).toBe(false);
  });
});
