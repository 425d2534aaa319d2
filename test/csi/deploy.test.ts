// deploy/kubernetes/ against the code: the manifests name the driver the plugin registers, the
// ConfigMap's csi.json passes the plugin's own config schema, and the DaemonSet gives the plugin
// what publishing needs (privileged, /dev/fuse, kubelet's pods dir with Bidirectional propagation,
// the registration and plugin dirs where the config puts the sockets, the host's cgroup tree).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseCsiConfig } from '../../node/csi/index';

const DIR = path.resolve(__dirname, '..', '..', 'deploy', 'kubernetes');
type Doc = Record<string, any>;
const load = (file: string): Doc[] => parseAllDocuments(fs.readFileSync(path.join(DIR, file), 'utf8')).map((d) => d.toJS() as Doc);
const byKind = (docs: Doc[], kind: string) => docs.find((d) => d.kind === kind)!;

describe('deploy/kubernetes', () => {
  const driver = byKind(load('csidriver.yaml'), 'CSIDriver');
  const node = load('node-daemonset.yaml');
  const ds = byKind(node, 'DaemonSet');
  const config = parseCsiConfig(JSON.parse(byKind(node, 'ConfigMap').data['csi.json']));
  const pod = byKind(load('example-pod.yaml'), 'Pod');

  it('CSIDriver: ephemeral inline only, pod info on mount, nothing to attach; the name the plugin registers', () => {
    expect(driver.spec).toMatchObject({ volumeLifecycleModes: ['Ephemeral'], podInfoOnMount: true, attachRequired: false });
    expect(driver.metadata.name).toBe(config.driverName);
  });

  it('DaemonSet: privileged, /dev/fuse, Bidirectional pods dir, socket dirs where the config puts the sockets, host cgroups at cgroupRoot', () => {
    const c = ds.spec.template.spec.containers[0];
    expect(c.securityContext.privileged).toBe(true);
    expect(c.command.join(' ')).toContain('--csi-config=/etc/ephemera/csi.json');
    const mounts = new Map<string, Doc>(c.volumeMounts.map((m: Doc) => [m.mountPath, m]));
    const hostPathOf = (mountPath: string) => ds.spec.template.spec.volumes.find((v: Doc) => v.name === mounts.get(mountPath)?.name)?.hostPath?.path;
    expect(mounts.get('/var/lib/kubelet/pods')?.mountPropagation).toBe('Bidirectional');
    expect(hostPathOf('/var/lib/kubelet/pods')).toBe('/var/lib/kubelet/pods');
    expect(hostPathOf('/dev/fuse')).toBe('/dev/fuse');
    // kubelet calls the sockets by their host paths: the same paths inside the container.
    for (const socket of [config.csiSocket, config.registrationSocket]) expect(hostPathOf(path.dirname(socket))).toBe(path.dirname(socket));
    expect(config.cgroupRoot.startsWith('/host/sys/fs/cgroup/')).toBe(true);
    expect(hostPathOf('/host/sys/fs/cgroup')).toBe('/sys/fs/cgroup');
  });

  it("example pod: /tmp is the driver's inline volume, in a namespace the config maps", () => {
    const tmp = pod.spec.volumes.find((v: Doc) => v.name === pod.spec.containers[0].volumeMounts.find((m: Doc) => m.mountPath === '/tmp').name);
    expect(tmp.csi.driver).toBe(config.driverName);
    expect(Object.keys(config.namespaces)).toContain(pod.metadata.namespace);
  });

  it('scheduler config: the extender with the filter and prioritize verbs of docs/kubernetes.md', () => {
    const s = load('scheduler-config.yaml')[0]!;
    expect(s.kind).toBe('KubeSchedulerConfiguration');
    expect(s.extenders[0]).toMatchObject({ filterVerb: 'filter', prioritizeVerb: 'prioritize', nodeCacheCapable: false, ignorable: true });
    expect(s.extenders[0].urlPrefix).toMatch(/\/scheduler\/<extender\.token>$/);
  });
});
