import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { MountId, type DaemonClient } from '../../fusefs/daemon/index';
import { isMountPoint } from '../../fusefs/index';
import { parseInlineVolume, type InlineVolume } from './attributes';
import { podMemoryCgroup } from './cgroup';
import type { CsiConfig } from './config';
import { CsiError, errorMessage, invalid } from './errors';

/** NodePublishVolumeRequest as decoded (proto field names, defaults filled in). */
export interface PublishRequest {
  volume_id: string;
  target_path: string;
  staging_target_path?: string;
  volume_capability: {
    access_type?: 'mount' | 'block';
    mount?: { fs_type?: string; mount_flags?: string[] } | null;
    block?: object | null;
    access_mode?: { mode?: string | number } | null;
  } | null;
  readonly: boolean;
  volume_context: Record<string, string>;
}

export interface UnpublishRequest {
  volume_id: string;
  target_path: string;
}

/** A volume this node serves now, as the node daemon knows it (the daemon's records are the state). */
export interface PublishedVolume {
  mountId: string;
  targetPath: string;
  tenant: string | null;
  sizeQuota: number;
  cgroup: string | null;
}

export interface CsiNodeOptions {
  config: CsiConfig;
  daemon: DaemonClient;
  /** Size quota when neither the attributes nor the config give one (the node's --tmp-size). */
  defaultSizeQuota: number;
  log: Logger;
}

const UNTENANTED = 'untenanted';
const MOUNT_ID_PREFIX = 'csi.';

/**
 * The Node service's logic, transport-free. Each published volume is one mount of the node daemon
 * at the target path, bound to the pod's memory cgroup from the start (kubelet makes the pod's
 * cgroup before it mounts volumes, so unlike Docker's volumes nothing is written before it
 * exists). The daemon's mount table is the only state: a restarted plugin still unpublishes
 * what it published. Calls run one at a time: they are rare (one per pod start and stop) and
 * the idempotency checks must see a settled table.
 */
export class CsiNode {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: CsiNodeOptions) {}

  publish(r: PublishRequest): Promise<void> {
    return this.serial(() => this.doPublish(r));
  }

  unpublish(r: UnpublishRequest): Promise<void> {
    return this.serial(() => this.doUnpublish(r));
  }

  /** Every volume this driver has published on this node now. */
  async published(): Promise<PublishedVolume[]> {
    const stats = await this.opts.daemon.allStats();
    return stats
      .filter((m) => m.id.startsWith(MOUNT_ID_PREFIX))
      .map((m) => ({ mountId: m.id, targetPath: m.path, tenant: m.owner === UNTENANTED ? null : m.owner, sizeQuota: m.sizeQuota, cgroup: m.cgroup }));
  }

  /** The driver's tenant for a namespace: only the operator's map decides, never the pod. */
  tenantOf(v: InlineVolume): string | null {
    const map = this.opts.config.namespaces;
    if (!Object.prototype.hasOwnProperty.call(map, v.podNamespace)) {
      throw invalid(`namespace ${v.podNamespace} has no tenant in the driver's configuration (namespaces): its pods get no Ephemera /tmp`);
    }
    const tenant = map[v.podNamespace] ?? null;
    if (v.claimedTenant !== undefined && v.claimedTenant !== tenant) {
      // Which tenant the namespace does belong to is not said: the message goes to the pod's author.
      throw new CsiError(status.PERMISSION_DENIED, `volumeAttributes.tenant=${v.claimedTenant} is not the tenant of namespace ${v.podNamespace}: refused (a volume's tenant comes from the driver's namespace map)`);
    }
    return tenant;
  }

  private async doPublish(r: PublishRequest): Promise<void> {
    if (!r.volume_id) throw invalid('volume_id is missing');
    if (!r.target_path) throw invalid('target_path is missing');
    if (!path.isAbsolute(r.target_path)) throw invalid(`target_path ${JSON.stringify(r.target_path)} is not an absolute path`);
    const target = path.resolve(r.target_path);
    const cap = r.volume_capability;
    if (!cap) throw invalid('volume_capability is missing');
    if (cap.access_type === 'block' || cap.block) throw invalid('volume_capability: block access is not supported (an Ephemera /tmp is a file system: use mount)');
    if (cap.access_type !== 'mount' && !cap.mount) throw invalid('volume_capability.mount is missing');
    const mode = cap.access_mode?.mode;
    if (mode === undefined || mode === 'UNKNOWN' || mode === 0) throw invalid('volume_capability.access_mode.mode is missing or UNKNOWN');
    if (r.readonly) throw invalid('readonly: a read-only /tmp store is of no use; set readOnly: false on the inline volume');
    const v = parseInlineVolume(r.volume_context ?? {});
    const tenant = this.tenantOf(v);
    const sizeQuota = v.sizeQuota ?? this.opts.config.defaultSizeBytes ?? this.opts.defaultSizeQuota;
    const mountId = csiMountId(r.volume_id);

    // Idempotency (spec: same volume and target → OK, same target with other arguments →
    // ALREADY_EXISTS, the volume at another target → FAILED_PRECONDITION: not MULTI_NODE).
    const published = await this.published();
    const atTarget = published.find((p) => p.targetPath === target);
    if (atTarget) {
      if (atTarget.mountId !== mountId) throw new CsiError(status.ALREADY_EXISTS, `target_path ${target} already holds another volume (mount ${atTarget.mountId})`);
      if (atTarget.sizeQuota !== sizeQuota || atTarget.tenant !== tenant) {
        throw new CsiError(status.ALREADY_EXISTS, `volume ${r.volume_id} is published at ${target} with size ${atTarget.sizeQuota} B, tenant ${atTarget.tenant ?? 'none'}: not the ${sizeQuota} B, tenant ${tenant ?? 'none'} asked now`);
      }
      return;
    }
    const elsewhere = published.find((p) => p.mountId === mountId);
    if (elsewhere) throw new CsiError(status.FAILED_PRECONDITION, `volume ${r.volume_id} is already published at ${elsewhere.targetPath}: an ephemeral volume serves one pod`);

    const cgroup = podMemoryCgroup(v.podUid, this.opts.config.cgroupRoot);
    // The spec leaves making target_path to the plugin (kubelet makes its parent).
    const madeTarget = !fs.existsSync(target);
    if (madeTarget) fs.mkdirSync(target, { recursive: true, mode: 0o755 });
    const daemon = this.opts.daemon;
    try {
      await daemon.addMount({ id: mountId, path: target, budget: 0, sizeQuota, inodeQuota: v.inodeQuota, owner: tenant ?? UNTENANTED });
    } catch (e) {
      if (madeTarget) rmdirQuietly(target);
      throw new CsiError(status.INTERNAL, `cannot make the store of volume ${r.volume_id}: ${errorMessage(e)}`, e);
    }
    try {
      await daemon.call({ type: 'attach-cgroup', id: mountId, cgroup, sizeHint: v.profile?.largestFileBytes || null });
    } catch (e) {
      await daemon.removeMount(mountId).catch(() => undefined);
      if (madeTarget) rmdirQuietly(target);
      throw new CsiError(status.INTERNAL, `cannot bind volume ${r.volume_id} to pod ${v.podNamespace}/${v.podName}'s cgroup ${cgroup}: ${errorMessage(e)}`, e);
    }
    this.opts.log.info({ volume: r.volume_id, pod: `${v.podNamespace}/${v.podName}`, tenant, sizeQuota, cgroup, target, profile: v.profile }, 'volume published');
  }

  /**
   * The pod stopped (kubelet unpublishes after its containers are gone, while its cgroup still
   * exists), so its /tmp goes. remove-mount frees what the store held before it answers (its files
   * truncated and unlinked, the tiers unmounted at once: test/daemon/remove-charge), so nothing stays
   * charged to the pod's cgroup and nothing is copied to disk; then the directory the plugin made goes.
   */
  private async doUnpublish(r: UnpublishRequest): Promise<void> {
    if (!r.volume_id) throw invalid('volume_id is missing');
    if (!r.target_path) throw invalid('target_path is missing');
    if (!path.isAbsolute(r.target_path)) throw invalid(`target_path ${JSON.stringify(r.target_path)} is not an absolute path`);
    const target = path.resolve(r.target_path);
    const mountId = csiMountId(r.volume_id);
    const mine = (await this.published()).find((p) => p.mountId === mountId && p.targetPath === target);
    if (!mine) {
      // Not published here (or unpublished already): idempotent. A directory a failed publish left is removed.
      if (!isMountPoint(target)) rmdirQuietly(target);
      return;
    }
    try {
      await this.opts.daemon.removeMount(mountId);
    } catch (e) {
      if ((e as { code?: string }).code !== 'E_UNKNOWN_MOUNT') throw new CsiError(status.INTERNAL, `removing the store of volume ${r.volume_id}: ${errorMessage(e)}`, e);
    }
    // The spec: the SP deletes the directory it made at target_path.
    if (!isMountPoint(target)) rmdirQuietly(target);
    this.opts.log.info({ volume: r.volume_id, target }, 'volume unpublished');
  }

  /** Waits for the calls in flight. */
  async idle(): Promise<void> {
    await this.chain.catch(() => undefined);
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work, work);
    this.chain = run.catch(() => undefined);
    return run;
  }
}

/** `csi.<volume_id>` when that is a valid mount id (kubelet's `csi-<sha256>` is), else a digest of it. */
export function csiMountId(volumeId: string): string {
  const natural = `${MOUNT_ID_PREFIX}${volumeId}`;
  if (MountId.safeParse(natural).success) return natural;
  return `${MOUNT_ID_PREFIX}h-${createHash('sha256').update(volumeId).digest('hex').slice(0, 40)}`;
}

function rmdirQuietly(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    /* not there, or not empty: left as it is */
  }
}
