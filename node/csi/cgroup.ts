import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { CsiError, invalid } from './errors';

/** A pod uid as the API server makes them (a UUID); anything else must not become a path. */
const POD_UID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * Where kubelet puts a pod's cgroup, relative to a hierarchy's root, for both cgroup drivers and
 * every QoS class: cgroupfs `kubepods[/burstable|/besteffort]/pod<uid>`, systemd
 * `kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid with _ for ->.slice`.
 * Guaranteed pods sit directly under kubepods. The same names hold on the v2 unified hierarchy.
 */
export function podCgroupCandidates(podUid: string): string[] {
  const u = podUid.toLowerCase();
  const s = u.replace(/-/g, '_');
  return [
    `kubepods/pod${u}`,
    `kubepods/burstable/pod${u}`,
    `kubepods/besteffort/pod${u}`,
    `kubepods.slice/kubepods-pod${s}.slice`,
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${s}.slice`,
    `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${s}.slice`,
  ];
}

/**
 * The pod's memory cgroup under `root` (the v1 memory hierarchy's mount). kubelet makes it before
 * it mounts the pod's volumes, so at NodePublishVolume it exists; when it does not, the call fails
 * with FAILED_PRECONDITION (kubelet retries) naming where it looked.
 */
export function podMemoryCgroup(podUid: string, root: string): string {
  if (!POD_UID.test(podUid)) throw invalid(`volume_context["csi.storage.k8s.io/pod.uid"]: ${JSON.stringify(podUid)} is not a pod uid (a UUID)`);
  const candidates = podCgroupCandidates(podUid);
  for (const rel of candidates) {
    const dir = path.join(root, rel);
    if (existsSync(path.join(dir, 'cgroup.procs'))) return dir;
  }
  throw new CsiError(status.FAILED_PRECONDITION, `no memory cgroup for pod ${podUid} under ${root} (looked for ${candidates.join(', ')}): is kubelet's cgroup root the one in the driver's config (cgroupRoot)?`);
}
