import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultTmpSizeBytes } from '../policy/index';
import { DaemonClient, NodeDaemon } from '../fusefs/index';
import { containerIdOfCgroup, EngineError, errorMessage, SIZE_HINT_LABEL, type FunctionSpec, type TmpCreateOptions, type TmpProvider } from '../engine/index';
import { createLogger } from '../log/index';

export interface EphemeraProviderOptions {
  /** Talk to a running node daemon (`ephemera node` / `ephemera node-daemon`) on this socket… */
  socketPath?: string;
  /** …or start one in this process with this state dir. */
  stateDir?: string;
  /** The function's profiled largest file F (bytes): with it, new files go straight to memory when 1.1·F fits. */
  sizeHintBytes?: number | null;
  /** Ignore every size hint (the containers' labels and sizeHintBytes): new files placed as with no profile. */
  ignoreSizeHints?: boolean;
  /** Pause the v1 OOM killer at the limit and raise an alarm for an emergency loan (1 s watchdog). */
  oomPause?: boolean;
  /** Size quota of each /tmp over both tiers, bytes; default: policy's defaultTmpSizeBytes (half of RAM, at most a quarter of the disk tier's free space). */
  sizeQuotaBytes?: number;
  /** Log level of a daemon started in this process (to stderr); default `warn`, or $EPHEMERA_LOG_LEVEL. */
  logLevel?: string;
}

/**
 * Gives each function container its own Ephemera mount as /tmp: created under the node daemon's
 * shared parent before the container exists (the engine bind-mounts it with rslave propagation,
 * so a daemon restart's remount reaches the container), tied to the container's memory cgroup once
 * it runs, removed with it. The profiling run keeps every file on the disk tier, so the profile's U
 * (rss) and F (largest file) are measured without the store in memory.
 */
export class EphemeraTmpProvider implements TmpProvider {
  private readonly profiling = new Set<string>();
  private readonly hints = new Map<string, number | null>();
  /** Every /tmp gets a size quota: an unbounded disk tier would let one container fill the node's disk. */
  readonly sizeQuotaBytes: number;

  private constructor(
    private readonly client: DaemonClient,
    private readonly ownDaemon: NodeDaemon | undefined,
    private readonly opts: EphemeraProviderOptions,
  ) {
    this.sizeQuotaBytes = opts.sizeQuotaBytes && opts.sizeQuotaBytes > 0 ? opts.sizeQuotaBytes : defaultTmpSizeBytes({ ramBytes: os.totalmem(), diskFreeBytes: freeBytesAt(ownDaemon?.paths.spillRoot ?? '/var/lib/ephemera') });
  }

  static async start(opts: EphemeraProviderOptions = {}): Promise<EphemeraTmpProvider> {
    let daemon: NodeDaemon | undefined;
    let socket = opts.socketPath;
    if (!socket) {
      const logger = createLogger('ephemera-node-daemon', 'warn', opts.logLevel);
      daemon = (await NodeDaemon.start({ stateDir: opts.stateDir ?? '/var/lib/ephemera/provider', logger })).daemon;
      socket = daemon.paths.socket;
    }
    try {
      const client = await DaemonClient.connect(socket);
      return new EphemeraTmpProvider(client, daemon, opts);
    } catch (err) {
      await daemon?.stop();
      throw new EngineError('E_TMP_PROVIDER', `cannot reach the Ephemera node daemon on ${socket}: ${errorMessage(err)}`, undefined, err);
    }
  }

  /** The node daemon's state dir when this provider runs its own daemon: tenant managers that should
   * talk to its mounts use it as theirs (socket and token live there). */
  get stateDir(): string | undefined {
    return this.ownDaemon?.paths.stateDir;
  }

  /** The per-container size hint (the function's profile), if it differs from the provider's. */
  setSizeHint(containerName: string, bytes: number | null): void {
    this.hints.set(mountId(containerName), bytes);
  }

  async create(containerName: string, spec: FunctionSpec, options: TmpCreateOptions): Promise<{ hostPath: string }> {
    const id = mountId(containerName);
    if (options.profiling) this.profiling.add(id);
    const hint = Number(spec.labels?.[SIZE_HINT_LABEL]);
    if (Number.isFinite(hint) && hint >= 0 && spec.labels?.[SIZE_HINT_LABEL] !== undefined) this.hints.set(id, hint);
    const limit = spec.memoryMiB * 1024 * 1024;
    try {
      const r = await this.client.addMount({
        id,
        // Until the cgroup is attached the budget bounds the memory tier; afterwards the memory
        // adapter keeps the container's rss + shmem under limit − headroom.
        budget: options.profiling ? 0 : limit,
        sizeQuota: this.sizeQuotaBytes,
        inodeQuota: 0,
        owner: spec.tenant ?? 'default',
        newFilesOnDisk: options.profiling,
      });
      return { hostPath: r.mount.path };
    } catch (err) {
      this.profiling.delete(id);
      throw new EngineError('E_TMP_PROVIDER', `cannot create the Ephemera /tmp of ${containerName}: ${errorMessage(err)}`, undefined, err);
    }
  }

  async attach(containerName: string, cgroupPath: string): Promise<void> {
    const id = mountId(containerName);
    if (this.profiling.has(id)) return; // the profiling run measures the function alone: files stay on disk
    // With the container's id the mount joins its tenant manager's link.
    const containerId = containerIdOfCgroup(cgroupPath);
    try {
      await this.client.call({
        type: 'attach-cgroup',
        id,
        cgroup: cgroupPath,
        sizeHint: this.opts.ignoreSizeHints ? null : (this.hints.get(id) ?? this.opts.sizeHintBytes ?? null),
        oomPause: this.opts.oomPause ?? false,
        ...(containerId ? { containerId } : {}),
      });
    } catch (err) {
      throw new EngineError('E_TMP_PROVIDER', `cannot tie the Ephemera /tmp of ${containerName} to ${cgroupPath}: ${errorMessage(err)}`, undefined, err);
    }
  }

  async remove(containerName: string): Promise<void> {
    const id = mountId(containerName);
    this.profiling.delete(id);
    this.hints.delete(id);
    try {
      await this.client.removeMount(id);
    } catch (err) {
      if ((err as { code?: string }).code === 'E_UNKNOWN_MOUNT') return; // already gone
      throw new EngineError('E_TMP_PROVIDER', `cannot remove the Ephemera /tmp of ${containerName}: ${errorMessage(err)}`, undefined, err);
    }
  }

  /** Daemon figures for one container's /tmp (tiers, inodes, opcode counts). */
  stats(containerName: string) {
    return this.client.stats(mountId(containerName), true);
  }

  async close(): Promise<void> {
    this.client.close();
    await this.ownDaemon?.stop();
  }
}

/** Mount ids are container names made safe for the daemon's id rules. */
export function mountId(containerName: string): string {
  return containerName.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 128);
}

/** Free bytes on the file system holding `dir` (its nearest existing ancestor). */
function freeBytesAt(dir: string): number {
  let d = path.resolve(dir);
  while (!fs.existsSync(d) && d !== path.dirname(d)) d = path.dirname(d);
  const st = fs.statfsSync(d);
  return st.bavail * st.bsize;
}
