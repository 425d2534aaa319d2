import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { PolicyConfig } from '../../policy/index';
import type { MountMetricsSource } from '../metrics';
import { EphemeraMount, type MountOptions } from '../mount';
import type { NativeCounters, NativeUsage } from '../native';
import type { CgroupBudget, ShrinkResult } from '../cgroup-budget';
import type { BudgetSpec, TierKeeper } from '../tier-keeper';
import { DaemonError } from './errors';
import { isMountPoint, unmountQuietly } from '../memtier';
import { SizedMemoryTier, stderrOf } from './memory-tier';
import { SizedDiskTier } from './disk-tier';
import { FusefsError } from '../errors';
import type { EvictionReport, MountStats } from './messages';
import { prepareSpillDir } from './paths';
import { restartPaths, type RestartOptions } from '../restart';
import type { MountRecord } from './state';

/**
 * One mount of the node daemon: its FUSE session, its own sized memory-tier tmpfs, its spill dir,
 * and its tier keeper, whose budget is the record's (a fixed budget, or the container's cgroup).
 * Opened from a record, so a fresh add-mount and a restart take the same path.
 */
export class ManagedMount implements MountMetricsSource {
  private constructor(
    private record: MountRecord,
    readonly mount: EphemeraMount,
    private readonly memoryTier: SizedMemoryTier,
    /** The disk tier's own file system, sized to the quota; undefined: no quota, or no loop devices here. */
    private readonly diskTier: SizedDiskTier | undefined,
    private readonly policy: PolicyConfig,
  ) {}

  /**
   * A new mount (or an empty one where a dead daemon's mount was). With `restart`, a holder keeps
   * its connection and a journal its table, so a successor daemon can take it over (`resume`).
   */
  static async open(record: MountRecord, policy: PolicyConfig, onError: (what: string, e: unknown) => void, restart?: RestartOptions): Promise<ManagedMount> {
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
      const mount = await EphemeraMount.open(mountOptionsOf(record, memoryTier, diskTier, restart));
      undo.push(() => mount.close());
      publish(record.fusePath, record.path);
      undo.push(() => unmountQuietly(record.path));
      mount.keeper.onError = onError;
      await useBudget(mount.keeper, budgetOf(record, policy));
      return new ManagedMount(record, mount, memoryTier, diskTier, policy);
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

  /**
   * Takes over the mount a dead daemon served (issue 14): its holder hands over the connection, the
   * journal gives the table, and the tiers it left mounted are used as they are, so every file, its
   * tier and its pages (still charged to the container that wrote them) stay. The public bind is
   * still the live FUSE mount's. Null when no holder keeps this mount (the caller mounts it empty).
   */
  static async resume(record: MountRecord, policy: PolicyConfig, onError: (what: string, e: unknown) => void, restart: RestartOptions): Promise<ManagedMount | null> {
    const paths = restartPaths(record.fusePath, restart.stateDir);
    if (!fs.existsSync(paths.socket)) return null;
    const memoryTier = SizedMemoryTier.adopt(record.memoryDir);
    const diskTier = record.sizeQuota > 0 ? SizedDiskTier.adopt(record.spillDir) : undefined;
    const mount = await EphemeraMount.open(mountOptionsOf(record, memoryTier, diskTier, restart));
    try {
      if (!mount.restart?.takeover) throw new FusefsError('E_TAKEOVER', `the holder of ${record.fusePath} handed nothing over`);
      if (!isMountPoint(record.path)) publish(record.fusePath, record.path);
      mount.keeper.onError = onError;
      await useBudget(mount.keeper, budgetOf(record, policy));
      return new ManagedMount(record, mount, memoryTier, diskTier, policy);
    } catch (e) {
      await mount.close().catch(() => undefined);
      throw e;
    }
  }

  /** The tier keeper: it owns the tiers, under the record's budget. */
  get keeper(): TierKeeper {
    return this.mount.keeper;
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
    return this.record.budget;
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
    return this.keeper.totals;
  }

  /** The cgroup budget, once a cgroup is attached (usage, alarms, shrinks for the manager link). */
  get cgroupBudget(): CgroupBudget | undefined {
    return this.keeper.cgroup;
  }

  /** Ties the mount to its container's memory cgroup: the keeper's budget becomes the cgroup's limit. */
  async attachCgroup(cgroup: string, sizeHint: number | null, oomPause: boolean, containerId: string | null = null): Promise<void> {
    const record = { ...this.record, cgroup, sizeHint, oomPause, containerId };
    await useBudget(this.keeper, budgetOf(record, this.policy));
    this.record = record;
  }

  /**
   * The container is gone: the keeper's budget becomes 0 with new files on disk, and every closed
   * memory-tier file moves to disk (urgent: also inside the anti-thrash window), so no page stays
   * charged to the dead cgroup.
   */
  async detachCgroup(): Promise<EvictionReport> {
    this.record = { ...this.record, cgroup: null, containerId: null, budget: 0, newFilesOnDisk: true };
    await useBudget(this.keeper, budgetOf(this.record, this.policy));
    return this.keeper.evict(this.mount.tierBytes().memory, true);
  }

  async shrink(targetLimit: number): Promise<ShrinkResult> {
    const cgroup = this.keeper.cgroup;
    if (!cgroup) throw new DaemonError('E_NO_CGROUP', `mount "${this.record.id}" has no cgroup attached: nothing to shrink`);
    return cgroup.requestShrink(targetLimit);
  }

  evict(bytes: number, urgent: boolean): Promise<EvictionReport> {
    return this.keeper.evict(bytes, urgent);
  }

  /** Promotes into the room now; refused under a cgroup (the keeper promotes by itself, charged to the container). */
  promote(): Promise<{ promoted: number; bytes: number }> {
    return this.keeper.promoteNow();
  }

  async setBudget(budget: number): Promise<EvictionReport> {
    const report = await this.keeper.setBudget(budget);
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
      throw new FusefsError('E_BAD_OPTION', `cannot set the size quota to ${sizeQuota} bytes: the mount holds ${held} (memory ${u.bytesMemory}, disk ${u.bytesDisk}, names ${u.nameBytes})`);
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
    // The counters of the budget in force: a cgroup attached starts its own.
    const t = this.keeper.totals;
    return {
      id: this.record.id,
      path: this.record.path,
      owner: this.record.owner,
      mode: this.mount.mode,
      budget: this.record.budget,
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
      overBudgetOpenBytes: this.keeper.overBudgetOpenBytes,
      alarms: t.alarms,
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

  /**
   * An upgrade's stop (restartable only): the session stops serving without unmounting, and the
   * public bind, both tiers and the record stay for the next daemon, which resumes it.
   */
  async handOver(): Promise<void> {
    this.closeStarted = true;
    await this.mount.handOver();
  }

  async close(): Promise<void> {
    this.closeStarted = true;
    try {
      await this.keeper.close();
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

/** The FUSE session of a record on its tiers: the same for a new mount and for one taken over. */
function mountOptionsOf(record: MountRecord, memoryTier: SizedMemoryTier, diskTier: SizedDiskTier | undefined, restart: RestartOptions | undefined): MountOptions {
  return {
    mountpoint: record.fusePath,
    allowOther: true, // the function runs as some container user
    sharedMemoryDir: memoryTier.dir,
    spillDir: diskTier?.dir ?? record.spillDir,
    sizeQuota: record.sizeQuota,
    inodeQuota: record.inodeQuota,
    // Both tiers are this mount's own file systems: the quota counts them as one.
    memoryTierSized: record.sizeQuota > 0,
    diskTierSized: diskTier !== undefined,
    ...(restart ? { restart } : {}),
  };
}

/** The keeper's budget for a record: its container's cgroup once attached, else its fixed budget. */
function budgetOf(record: MountRecord, policy: PolicyConfig): BudgetSpec {
  return record.cgroup === null
    ? { kind: 'fixed', budget: record.budget, policy, newFilesOnDisk: record.newFilesOnDisk }
    : { kind: 'cgroup', cgroupPath: record.cgroup, policy, sizeHintBytes: record.sizeHint, oomPause: record.oomPause };
}

async function useBudget(keeper: TierKeeper, spec: BudgetSpec): Promise<void> {
  try {
    await keeper.use(spec);
  } catch (e) {
    if (spec.kind === 'cgroup') throw new DaemonError('E_NO_CGROUP', `cannot attach the memory cgroup ${spec.cgroupPath}: ${(e as Error).message}`);
    throw e;
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
    throw new FusefsError('E_MOUNT', `cannot bind ${fusePath} at ${publicPath}: ${stderrOf(e)}`);
  }
  if (!isMountPoint(publicPath)) throw new FusefsError('E_MOUNT', `bind of ${fusePath} at ${publicPath} did not appear`);
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
