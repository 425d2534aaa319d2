import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { PolicyConfig } from '../../policy/index';
import type { MountMetricsSource } from '../metrics';
import { EphemeraMount } from '../mount';
import type { NativeCounters, NativeUsage } from '../native';
import { attachMemoryAdapter } from './adapter-hook';
import type { MemoryAdapter, ShrinkResult } from '../adapter';
import { DaemonError } from './errors';
import { TierBalancer } from './balancer';
import { isMountPoint, unmountQuietly } from '../memtier';
import { SizedMemoryTier, stderrOf } from './memory-tier';
import { SizedDiskTier } from './disk-tier';
import { EphemeraError } from '../errors';
import type { EvictionReport, MountStats } from './messages';
import { prepareSpillDir } from './paths';
import type { MountRecord } from './state';

/**
 * One mount of the node daemon: its FUSE session, its own sized memory-tier tmpfs, its spill dir,
 * its budget keeper and (with a cgroup) its memory adapter. Opened from a record, so a fresh
 * add-mount and a restart take the same path.
 */
export class ManagedMount implements MountMetricsSource {
  private constructor(
    private record: MountRecord,
    readonly mount: EphemeraMount,
    private readonly memoryTier: SizedMemoryTier,
    /** The disk tier's own file system, sized to the quota; undefined: no quota, or no loop devices here. */
    private readonly diskTier: SizedDiskTier | undefined,
    private keeper: TierBalancer,
    private adapter: MemoryAdapter | undefined,
    private readonly policy: PolicyConfig,
    private readonly onError: (what: string, e: unknown) => void,
  ) {}

  static async open(record: MountRecord, policy: PolicyConfig, onError: (what: string, e: unknown) => void): Promise<ManagedMount> {
    const undo: Array<() => void | Promise<void>> = [];
    try {
      if (!pathExists(record.path)) {
        fs.mkdirSync(record.path, { recursive: true, mode: 0o755 });
        undo.push(() => fs.rmdirSync(record.path));
      }
      prepareSpillDir(record.spillDir);
      if (record.createdSpillDir) undo.push(() => fs.rmSync(record.spillDir, { recursive: true, force: true }));
      const memoryTier = SizedMemoryTier.create(record.memoryDir, record.sizeQuota);
      undo.push(() => memoryTier.close());
      const diskTier = record.sizeQuota > 0 ? openDiskTier(record, onError) : undefined;
      undo.push(() => diskTier?.close());
      fs.mkdirSync(record.fusePath, { recursive: true, mode: 0o700 });
      const mount = await EphemeraMount.open({
        mountpoint: record.fusePath,
        allowOther: true, // the function runs as some container user
        sharedMemoryDir: memoryTier.dir,
        spillDir: diskTier?.dir ?? record.spillDir,
        sizeQuota: record.sizeQuota,
        inodeQuota: record.inodeQuota,
        // Both tiers are this mount's own file systems: the quota counts them as one.
        memoryTierSized: record.sizeQuota > 0,
        diskTierSized: diskTier !== undefined,
      });
      undo.push(() => mount.close());
      publish(record.fusePath, record.path);
      undo.push(() => unmountQuietly(record.path));
      const balancer = new TierBalancer(mount, {
        budget: record.budget,
        policy,
        newFilesOnDisk: record.newFilesOnDisk,
        promote: record.cgroup === null,
        onError,
      });
      undo.push(() => balancer.close());
      let adapter: MemoryAdapter | undefined;
      if (record.cgroup !== null) {
        await balancer.close(); // the adapter owns placement and the tiers from here on
        adapter = await attachMemoryAdapter(mount, record.cgroup, policy, { sizeHint: record.sizeHint, oomPause: record.oomPause });
      }
      return new ManagedMount(record, mount, memoryTier, diskTier, balancer, adapter, policy, onError);
    } catch (e) {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch {
          /* the first error is the one worth reporting */
        }
      }
      throw e;
    }
  }

  /** The budget keeper: it owns the tiers while no cgroup is attached. */
  get balancer(): TierBalancer {
    return this.keeper;
  }

  get id(): string {
    return this.record.id;
  }
  get owner(): string {
    return this.record.owner;
  }
  get path(): string {
    return this.record.path;
  }
  get current(): MountRecord {
    return this.record;
  }
  budget(): number {
    return this.balancer.budget;
  }
  sizeQuota(): number {
    return this.record.sizeQuota;
  }
  inodeQuota(): number {
    return this.record.inodeQuota;
  }
  usage(): NativeUsage {
    return this.mount.usage();
  }
  tierBytes(): { memory: number; disk: number } {
    return this.mount.tierBytes();
  }
  counters(): NativeCounters {
    return this.mount.counters();
  }
  totals() {
    return this.balancer.totals;
  }

  /** The memory adapter, once a cgroup is attached. */
  get memoryAdapter(): MemoryAdapter | undefined {
    return this.adapter;
  }

  /**
   * Ties the mount to its container's memory cgroup. The budget keeper stands down: the memory
   * adapter keeps the cgroup's rss + shmem under limit − headroom and owns placement.
   */
  async attachCgroup(cgroup: string, sizeHint: number | null, oomPause: boolean): Promise<void> {
    await this.balancer.close();
    this.adapter = await attachMemoryAdapter(this.mount, cgroup, this.policy, { sizeHint, oomPause });
    this.record = { ...this.record, cgroup, sizeHint, oomPause };
  }

  /**
   * The container is gone: the adapter stops following its cgroup, every closed memory-tier file
   * moves to disk (urgent: also inside the anti-thrash window) and new files go to disk, so no page
   * stays charged to the dead cgroup. The budget keeper takes the mount back at budget 0.
   */
  async detachCgroup(): Promise<EvictionReport> {
    const adapter = this.adapter;
    this.adapter = undefined;
    await adapter?.close();
    await this.keeper.close();
    this.keeper = new TierBalancer(this.mount, { budget: 0, policy: this.policy, newFilesOnDisk: true, promote: false, onError: this.onError });
    this.record = { ...this.record, cgroup: null, budget: 0, newFilesOnDisk: true };
    await this.keeper.setBudget(0);
    return this.keeper.evict(this.mount.tierBytes().memory, true);
  }

  async shrink(targetLimit: number): Promise<ShrinkResult> {
    if (!this.adapter) throw new DaemonError('E_NO_CGROUP', `mount "${this.record.id}" has no cgroup attached: nothing to shrink`);
    return this.adapter.requestShrink(targetLimit);
  }

  /** Evicts through whoever owns the tiers: the memory adapter once a cgroup is attached. */
  async evict(bytes: number, urgent: boolean): Promise<EvictionReport> {
    if (!this.adapter) return this.balancer.evict(bytes, urgent);
    const before = { ...this.adapter.stats };
    const u = await this.adapter.evictBytes(bytes, urgent);
    const freedBytes = this.adapter.stats.spilledBytes - before.spilledBytes;
    return {
      requestedBytes: bytes,
      freedBytes,
      spilled: this.adapter.stats.spills - before.spills,
      shortfallBytes: Math.max(0, bytes - freedBytes),
      busy: this.mount.usage().openMemory,
      memoryBytes: u.memoryTierBytes,
    };
  }

  /**
   * Promotes into the room now. With a cgroup attached the adapter promotes by itself, through the
   * helper in the container's cgroup; a copy made here would charge the daemon, so it is refused.
   */
  promote(): Promise<{ promoted: number; bytes: number }> {
    if (this.adapter) {
      throw new DaemonError('E_BAD_OPTION', `mount "${this.record.id}" follows its cgroup (memory adapter): it promotes by itself, charged to the container`);
    }
    return this.balancer.promoteNow();
  }

  async setBudget(budget: number): Promise<EvictionReport> {
    if (this.adapter) {
      throw new DaemonError('E_BAD_OPTION', `mount "${this.record.id}" follows its cgroup's limit (memory adapter): the budget is not set by hand`);
    }
    const report = await this.balancer.setBudget(budget);
    this.record = { ...this.record, budget };
    return report;
  }

  /**
   * The memory tier's tmpfs is resized first: it refuses a size below what it holds, and then
   * nothing has changed. The native quotas follow.
   */
  setQuotas(sizeQuota: number, inodeQuota: number): void {
    const before = this.record.sizeQuota;
    const u = this.mount.usage();
    const held = u.bytesMemory + u.bytesDisk + u.nameBytes;
    if (sizeQuota > 0 && sizeQuota < held) {
      // As tmpfs refuses a size below what it holds, over both tiers together.
      throw new EphemeraError('E_BAD_OPTION', `cannot set the size quota to ${sizeQuota} bytes: the mount holds ${held} (memory ${u.bytesMemory}, disk ${u.bytesDisk}, names ${u.nameBytes})`);
    }
    this.memoryTier.resize(sizeQuota);
    try {
      this.diskTier?.resize(sizeQuota);
    } catch (e) {
      this.memoryTier.resize(before); // all or nothing
      throw e;
    }
    this.mount.setQuotas(sizeQuota, inodeQuota);
    this.record = { ...this.record, sizeQuota, inodeQuota };
  }

  stats(withInodes = false): MountStats {
    const usage = this.mount.usage();
    // Once a cgroup is attached the adapter moves the files; the budget keeper has stood down.
    const t = this.adapter?.stats ?? this.balancer.totals;
    return {
      id: this.record.id,
      path: this.record.path,
      owner: this.record.owner,
      mode: this.mount.mode,
      budget: this.balancer.budget,
      sizeQuota: this.record.sizeQuota,
      inodeQuota: this.record.inodeQuota,
      spillDir: this.record.spillDir,
      cgroup: this.record.cgroup,
      diskTierBounded: this.diskTier !== undefined,
      inodes: usage.inodes,
      files: usage.files,
      openFiles: usage.openFiles,
      bytes: { memory: usage.bytesMemory, disk: usage.bytesDisk },
      spills: t.spills,
      spilledBytes: t.spilledBytes,
      promotions: t.promotions,
      promotedBytes: t.promotedBytes,
      overBudgetOpenBytes: this.balancer.overBudgetOpenBytes,
      alarms: this.adapter?.stats.alarms ?? 0,
      ...(withInodes
        ? {
            inodeTable: this.mount.inodeStats().map((s) => ({
              ino: s.ino,
              tier: s.tier,
              size: s.size,
              allocated: s.allocated,
              openCount: s.openCount,
              lastOpenMs: s.lastOpenMs || null,
              lastCloseMs: s.lastCloseMs || null,
            })),
          }
        : {}),
    };
  }

  /** Unmounts (every layer at the public path) and frees the memory tier; the spill dir and mount point stay. */
  /** True once close() began: the connection ending after that is the daemon's doing. */
  get closing(): boolean {
    return this.closeStarted;
  }
  private closeStarted = false;

  async close(): Promise<void> {
    this.closeStarted = true;
    await this.balancer.close();
    try {
      await this.adapter?.close();
    } finally {
      unmountQuietly(this.record.path);
      await this.mount.close();
      this.memoryTier.close();
      this.diskTier?.close();
      try {
        fs.rmdirSync(this.record.fusePath);
      } catch {
        /* cleanup retries */
      }
    }
  }
}

/**
 * The FUSE session is mounted at a private path and bind-mounted at the public one. Why: a
 * container's /tmp is a bind (rslave) of the public path taken while our FUSE mount is there, so
 * it is a slave of that mount, not of the shared parent; after a crash, a fresh mount at the same
 * path reaches the container only if it is mounted ON the dead one (a mount on a mount propagates
 * to that mount's slaves). Mounting over a dead FUSE root works (the kernel does not ask the dead
 * server), but the native preflight refuses to mount a session over anything, so the session gets
 * a private path and only a bind (plain mount(2)) is stacked over the dead public mount. Each crash
 * leaves one dead layer underneath until the mount is removed (unmountQuietly peels every layer).
 */
function publish(fusePath: string, publicPath: string): void {
  try {
    execFileSync('mount', ['--bind', fusePath, publicPath], { stdio: 'pipe', timeout: 10_000 });
    execFileSync('mount', ['--make-shared', publicPath], { stdio: 'pipe', timeout: 10_000 });
  } catch (e) {
    throw new EphemeraError('E_MOUNT', `cannot bind ${fusePath} at ${publicPath}: ${stderrOf(e)}`);
  }
  if (!isMountPoint(publicPath)) throw new EphemeraError('E_MOUNT', `bind of ${fusePath} at ${publicPath} did not appear`);
}

/** A dead FUSE mount answers ENOTCONN: it exists (and is what the new mount is stacked on). */
function pathExists(p: string): boolean {
  try {
    return fs.statSync(p, { throwIfNoEntry: false }) !== undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') return true;
    throw e;
  }
}

/**
 * The disk tier on a file system of the quota's size. Where that cannot be made (no loop devices,
 * e.g. inside a container) the mount still serves, with the disk tier checked only at create and
 * spill, and says so: the alternative would be no /tmp at all.
 */
function openDiskTier(record: MountRecord, onError: (what: string, e: unknown) => void): SizedDiskTier | undefined {
  try {
    return SizedDiskTier.create(record.spillDir, record.sizeQuota);
  } catch (e) {
    onError(`sized disk tier of mount ${record.id} (the quota binds the memory tier only; disk-tier files are checked at create and spill)`, e);
    return undefined;
  }
}
