import { EventEmitter } from 'node:events';
import {
  DEFAULT_POLICY_CONFIG,
  decidePlacement,
  diskWorkingSetBytes,
  scaled,
  workingSetExcessBytes,
  planEviction,
  planPromotion,
  type InodeStat as PolicyInodeStat,
  type PolicyConfig,
} from '../policy';
import {
  ChargedCopier,
  CgroupWatcher,
  MemoryCgroup,
  OomGuard,
  headroomBytes,
  parseHeadroomConfig,
  type CgroupWatch,
  type HeadroomConfig,
  type HeadroomConfigInput,
  type OomAlarm,
} from './memory';
import type { EphemeraMount } from './mount';

/**
 * The memory adapter (thesis 3.2.3, 4.2.2): keeps a container's `rss + shmem` (its own memory plus
 * the memory tier, whose pages are charged to it) at or below `limit − headroom` by spilling
 * closed, cold inodes to the disk tier, and brings them back when room returns.
 *
 * Who pays for which page:
 * - Passthrough writes into the memory tier are charged to the writer: the container.
 * - A promotion's copy runs in a small helper process that first joins the container's cgroup
 *   (ChargedCopier), so the new memory-tier pages land on the container too, never on the daemon.
 * - A spill's copy runs in the daemon: the disk file's page cache is reclaimable, and the
 *   container's shmem is uncharged when the memory-tier file closes.
 * - Without passthrough (writeback mode) the daemon writes the memory tier itself, so its pages
 *   sit in the daemon's cgroup: the adapter then adds the memory tier's bytes to the container's
 *   usage, so the budget still bites where it belongs.
 *
 * Files that may outgrow memory while open must not sit on the memory tier while open (a tmpfs
 * write past the limit fails with ENOMEM even with the OOM killer paused, design.md). So new files
 * go to the disk tier (page cache, reclaimable) and are promoted when closed if they fit — unless
 * the profile's largest file (× 1.1) fits in the room left, in which case they go straight to memory.
 */
export interface MemoryAdapterOptions {
  /** The container's memory cgroup directory (v1 or v2). */
  cgroupPath: string;
  headroom?: HeadroomConfigInput;
  policy?: PolicyConfig;
  /** A watcher shared by every adapter of a daemon (one timer for all); default: its own. */
  watcher?: CgroupWatcher;
  /** The profiled largest file F, bytes (null: unknown → new files start on disk). */
  sizeHintBytes?: number | null;
  /** Pause the v1 OOM killer at the limit and raise an alarm (answered by a loan, or a 1 s watchdog). */
  oomPause?: boolean;
  answerTimeoutMs?: number;
  /** Promotions copied by a helper in the container's cgroup (default true). */
  chargedCopy?: boolean;
  helperPath?: string;
  /** Re-evaluate at least this often (a spilled file becomes promotable once the anti-thrash window passes). */
  rebalanceIntervalMs?: number;
}

export interface AdapterUsage {
  /** What counts against the container: rss + shmem (+ the memory tier in writeback mode). */
  usageBytes: number;
  limitBytes: number;
  markBytes: number;
  memoryTierBytes: number;
  diskTierBytes: number;
  /** The function's own memory: usage less the memory tier. */
  functionBytes: number;
}

export interface AdapterAlarm {
  shortfallBytes: number;
  oomPaused: boolean;
  usage: AdapterUsage;
  /** For an OOM-paused alarm: call once the limit was raised; otherwise a no-op. */
  resolve: () => void;
}

export interface ShrinkResult {
  ready: boolean;
  targetLimitBytes: number;
  usageBytes: number;
  spilledBytes: number;
  elapsedMs: number;
}

interface AdapterEvents {
  usage: [AdapterUsage];
  alarm: [AdapterAlarm];
  'shrink-ready': [ShrinkResult];
  spill: [{ ino: number; bytes: number }];
  promote: [{ ino: number; bytes: number; charged: boolean }];
  'adapter-error': [Error];
}

/** Dirty disk-tier page cache below this is left to the kernel's flusher. */
const DIRTY_WRITEBACK_FLOOR = 8 << 20;

const monotonicMs = () => Number(process.hrtime.bigint() / 1_000_000n);

export class MemoryAdapter extends EventEmitter<AdapterEvents> {
  private readonly cgroup: MemoryCgroup;
  private readonly ownsWatcher: boolean;
  private readonly watcher: CgroupWatcher;
  private readonly headroom: HeadroomConfig;
  private readonly policy: PolicyConfig;
  private watch?: CgroupWatch;
  private guard?: OomGuard;
  private copier?: ChargedCopier;
  private chain: Promise<void> = Promise.resolve();
  private pending = false;
  private closed = false;
  /** A lower target requested by the manager (shrink), in force until the limit follows. */
  private targetLimit: number | undefined;
  private lastAlarmMs = 0;
  private timer?: NodeJS.Timeout;
  /** An OOM-paused alarm waiting for its loan: resolved as soon as the limit goes up. */
  private pendingOomResolve: (() => void) | undefined;
  readonly stats = { spills: 0, spilledBytes: 0, promotions: 0, promotedBytes: 0, alarms: 0, writebacks: 0 };

  constructor(private readonly mount: EphemeraMount, private readonly opts: MemoryAdapterOptions) {
    super();
    this.cgroup = MemoryCgroup.fromPath(opts.cgroupPath);
    this.ownsWatcher = !opts.watcher;
    this.watcher = opts.watcher ?? new CgroupWatcher({ intervalMs: 20 });
    const base = opts.policy ?? DEFAULT_POLICY_CONFIG;
    // The policy's headroom unless the caller gives one: the manager plans with the same figure.
    this.headroom = parseHeadroomConfig(opts.headroom ?? base.headroom);
    // Closed files are what the disk-first scheme promotes, so promotion of closed files is on.
    this.policy = { ...base, eviction: { ...base.eviction, promoteClosed: true } };
  }

  get cgroupPath(): string {
    return this.opts.cgroupPath;
  }

  start(): void {
    this.watch = this.watcher.watch(this.cgroup, { mark: 'auto', headroom: this.headroom, usageStepBytes: 1 << 20 });
    const mine = (e: { cgroup: MemoryCgroup }) => e.cgroup === this.cgroup;
    this.watcher.on('usage', (e) => mine(e) && this.kick());
    this.watcher.on('over-mark', (e) => mine(e) && this.kick());
    this.watcher.on('under-mark', (e) => mine(e) && this.kick());
    this.watcher.on('limit', (e) => {
      if (!mine(e)) return;
      if (e.limitBytes > e.previousBytes && this.pendingOomResolve) {
        // The manager's emergency loan arrived: release the paused task now, not at the watchdog.
        const resolve = this.pendingOomResolve;
        this.pendingOomResolve = undefined;
        resolve();
      }
      if (this.targetLimit !== undefined && e.limitBytes <= this.targetLimit) this.targetLimit = undefined;
      this.kick();
    });
    // A disk-tier close may make room to promote; a memory-tier close may let a file that starves
    // the disk tier's working set of page cache be spilled (only closed files move).
    this.mount.onClose(() => this.kick());
    // In writeback mode the daemon writes every memory-tier page itself (charged to the daemon) and
    // usage() adds the whole memory tier to the container: promotions and fallocates copied by the
    // helper in the container's cgroup would then be counted twice. So the helper is for passthrough.
    if (this.opts.chargedCopy !== false && this.mount.mode === 'passthrough') {
      this.copier = ChargedCopier.forCgroup(this.opts.cgroupPath, this.opts.helperPath ? { helperPath: this.opts.helperPath } : {});
      // Allocating fallocates on the memory tier run natively through the same helper, in this cgroup.
      this.mount.setChargeAgent({ helper: this.copier.helperPath, cgroupDir: this.opts.cgroupPath });
    }
    if (this.opts.oomPause && this.cgroup.version === 1) {
      this.guard = new OomGuard(this.cgroup, { watcher: this.watcher, answerTimeoutMs: this.opts.answerTimeoutMs ?? 900 });
      this.guard.on('alarm', (a: OomAlarm) => {
        this.pendingOomResolve = () => a.resolve();
        this.raiseAlarm(0, true, () => a.resolve());
      });
      this.guard.arm();
    }
    this.timer = setInterval(() => this.kick(), this.opts.rebalanceIntervalMs ?? 500);
    this.timer.unref();
    this.kick();
  }

  /** Current figures (reads the cgroup now). */
  usage(): AdapterUsage {
    const limit = this.cgroup.limit();
    const effective = Math.min(limit, this.targetLimit ?? Infinity);
    const mark = Number.isFinite(effective) ? effective - headroomBytes(effective, this.headroom) : Infinity;
    const { bytes } = this.cgroup.usage();
    const tiers = this.mount.tierBytes();
    // In passthrough the memory tier is already inside shmem; otherwise it sits with the daemon.
    const usageBytes = this.mount.mode === 'passthrough' ? bytes : bytes + tiers.memory;
    return {
      usageBytes,
      limitBytes: limit,
      markBytes: mark,
      memoryTierBytes: tiers.memory,
      diskTierBytes: tiers.disk,
      functionBytes: Math.max(0, usageBytes - tiers.memory),
    };
  }

  /**
   * The manager asks to lower the limit to `targetLimitBytes`: spill until usage fits under the
   * new mark, then report whether the manager may lower it now (cgroup v1 refuses a limit below
   * usage). The lower mark stays in force until the limit follows.
   */
  async requestShrink(targetLimitBytes: number): Promise<ShrinkResult> {
    const t0 = monotonicMs();
    this.targetLimit = targetLimitBytes;
    const before = this.stats.spilledBytes;
    await this.enqueue(() => this.rebalance(true));
    // The limit can only go down once the container's dirty page cache is written back: v1
    // reclaims clean pages on a lower limit, but gives up (EBUSY) on dirty ones.
    await this.mount.syncDiskTier();
    const u = this.usage();
    const result: ShrinkResult = {
      ready: u.usageBytes <= targetLimitBytes - headroomBytes(targetLimitBytes, this.headroom) || u.usageBytes < targetLimitBytes,
      targetLimitBytes,
      usageBytes: u.usageBytes,
      spilledBytes: this.stats.spilledBytes - before,
      elapsedMs: monotonicMs() - t0,
    };
    this.emit('shrink-ready', result);
    return result;
  }

  /**
   * Moves at least `bytes` of the memory tier to disk (closed, cold files first); resolves with the
   * usage after. `urgent` (the manager's evictions) may move a file again inside the anti-thrash window.
   */
  async evictBytes(bytes: number, urgent = true): Promise<AdapterUsage> {
    await this.enqueue(async () => {
      const plan = planEviction({ nowMs: monotonicMs(), inodes: this.snapshotInodes() }, bytes, this.policy, { urgent });
      await this.spill(plan.victims, () => false);
    });
    return this.usage();
  }

  /** Cancels a shrink the manager gave up on. */
  cancelShrink(): void {
    this.targetLimit = undefined;
    this.kick();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.mount.onClose(null);
    if (this.copier) this.mount.setChargeAgent({ helper: '', cgroupDir: '' });
    this.guard?.close();
    this.watch?.unwatch();
    if (this.ownsWatcher) this.watcher.close();
    await this.chain.catch(() => undefined);
    await this.copier?.close();
    this.cgroup.close();
  }

  /** Coalesces triggers: at most one rebalance queued behind the one running. */
  private kick(): void {
    if (this.closed || this.pending) return;
    this.pending = true;
    void this.enqueue(async () => {
      this.pending = false;
      await this.rebalance(false);
    });
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.chain.then(job).catch((e: unknown) => {
      if (!this.closed) this.emit('adapter-error', e as Error);
    });
    this.chain = run;
    return run;
  }

  /** The cgroup's dirty and under-writeback page cache (v1 `total_dirty`/`total_writeback`, v2 `file_dirty`/`file_writeback`). */
  private dirtyBytes(): number {
    try {
      const st = this.cgroup.stat();
      const get = (...keys: string[]) => keys.reduce((n, k) => n || (st.get(k) ?? 0), 0);
      return get('total_dirty', 'file_dirty', 'dirty') + get('total_writeback', 'file_writeback', 'writeback');
    } catch {
      return 0;
    }
  }

  private snapshotInodes(): PolicyInodeStat[] {
    return this.mount.inodeStats().map((s) => ({
      ino: s.ino,
      tier: s.tier,
      sizeBytes: s.allocated,
      openCount: s.openCount,
      lastOpenMs: s.lastOpenMs || null,
      lastCloseMs: s.lastCloseMs || null,
      lastMoveMs: s.lastMoveMs || null,
    }));
  }

  private async rebalance(urgent: boolean): Promise<void> {
    if (this.closed) return;
    let u = this.usage();
    const dirty = this.dirtyBytes();
    if (dirty >= DIRTY_WRITEBACK_FLOOR && u.usageBytes + dirty > u.markBytes) {
      // cgroup v1 has no per-cgroup dirty throttling: a function writing a big file on the disk
      // tier can fill its limit with dirty page cache, which reclaim cannot free until the flusher
      // writes it back, and on a busy disk that ends in an OOM kill. Written back, it is reclaimable.
      this.stats.writebacks++;
      await this.mount.syncDiskTier();
      u = this.usage();
    }
    const overMark = u.usageBytes > u.markBytes;
    if (overMark) {
      const plan = planEviction({ nowMs: monotonicMs(), inodes: this.snapshotInodes() }, u.usageBytes - u.markBytes, this.policy, { urgent });
      const mark = u.markBytes;
      await this.spill(plan.victims, () => this.usage().usageBytes <= mark);
      u = this.usage();
      if (u.usageBytes > u.markBytes && plan.shortfallBytes > 0) this.raiseAlarm(u.usageBytes - u.markBytes, false, () => undefined);
    }
    if (!overMark && u.memoryTierBytes > 0 && this.mount.usage().filesDisk > 0) {
      // The memory tier and the disk tier's page cache share the limit, and shmem is never
      // reclaimed: closed memory-tier files give way to the disk-tier files in use, as the page
      // cache of an overlay /tmp would shift to the file being worked on.
      const snap = { nowMs: monotonicMs(), inodes: this.snapshotInodes() };
      const excess = workingSetExcessBytes(snap, this.sharedBudget(u), this.policy);
      if (excess > 0) {
        const plan = planEviction(snap, excess, this.policy, { urgent: false });
        let freed = 0;
        await this.spill(plan.victims, (bytes) => (freed += bytes) >= excess);
        u = this.usage();
      }
    }
    if (!overMark && this.targetLimit === undefined) {
      // Dirty page cache (a file being written on the disk tier) is not reclaimable until written
      // back, so it takes room too: promoting into it could push the cgroup into an OOM kill.
      // And while a disk-tier file is open with dirty pages about, a writer is likely still going:
      // its next pages would have to fit beside the promoted (unreclaimable) copy, and on cgroup v1
      // with a busy disk they do not (CI saw the 2×60+160 MiB writer OOM-killed that way). So
      // promotions wait for the writer to close; a quiet container's leftovers are written back.
      // The store's own counters answer "anything to promote? anyone writing on disk?": the idle
      // path never walks the inode table (hundreds of thousands of files would stall every
      // tenant's watcher on this thread), only a promotion that has room does.
      const counts = this.mount.usage();
      let dirty = this.dirtyBytes();
      const writing = counts.openDisk > 0;
      if (dirty > DIRTY_WRITEBACK_FLOOR && !writing) {
        await this.mount.syncDiskTier();
        dirty = this.dirtyBytes();
      }
      const room = dirty > DIRTY_WRITEBACK_FLOOR && writing ? 0 : u.markBytes - u.usageBytes - dirty;
      if (Number.isFinite(room) && room > 0 && counts.filesDisk > counts.openDisk) {
        const plan = planPromotion({ nowMs: monotonicMs(), inodes: this.snapshotInodes() }, room, this.policy, {
          sharedBudgetBytes: this.sharedBudget(u),
        });
        for (const ino of plan.promotions) {
          // A shrink asked meanwhile wins: promoting now would only have to be spilled again.
          if (this.targetLimit !== undefined || this.closed) break;
          await this.promote(ino);
        }
      }
    }
    const after = this.usage();
    this.updatePlacement(after);
    this.emit('usage', after);
  }

  /** Moves victims to the disk tier in order until `enough(bytes moved by this one)` says so. */
  private async spill(victims: readonly number[], enough: (movedBytes: number) => boolean): Promise<void> {
    for (const ino of victims) {
      const r = await this.mount.moveNow(ino, 'disk');
      const moved = r.code === 'OK' ? r.bytes : 0;
      if (r.code === 'OK') {
        this.stats.spills++;
        this.stats.spilledBytes += r.bytes;
        this.emit('spill', { ino, bytes: r.bytes });
      }
      if (enough(moved)) break;
    }
  }

  /** What the memory tier and the disk tier's page cache share: the mark less the function's own memory. */
  private sharedBudget(u: AdapterUsage): number {
    return Number.isFinite(u.markBytes) ? Math.max(0, u.markBytes - u.functionBytes) : Number.MAX_SAFE_INTEGER;
  }

  private async promote(ino: number): Promise<void> {
    if (!this.copier) {
      const r = await this.mount.moveNow(ino, 'memory');
      if (r.code === 'OK') this.countPromotion(ino, r.bytes, false);
      return;
    }
    // The file's pages on the disk tier are still the container's dirty page cache: written back
    // first, they are reclaimable while the copy charges the same bytes again as shmem. Without
    // this, cgroup v1 (no per-cgroup dirty throttling) can OOM-kill in the middle of a promotion.
    await this.mount.syncDiskTier();
    let ticket;
    try {
      ticket = this.mount.beginMove(ino, 'memory');
    } catch {
      return; // opened, unlinked or already moving: the next rebalance looks again
    }
    try {
      await this.copier.copy(ticket.srcFd, ticket.dstFd, ticket.size);
      if (this.mount.commitMove(ticket.token) === 0) this.countPromotion(ino, ticket.size, true);
    } catch (e) {
      this.mount.abortMove(ticket.token);
      throw e;
    }
  }

  private countPromotion(ino: number, bytes: number, charged: boolean): void {
    this.stats.promotions++;
    this.stats.promotedBytes += bytes;
    this.emit('promote', { ino, bytes, charged });
  }

  /** Where new files go, decided natively at CREATE from the rule set here. */
  private updatePlacement(u: AdapterUsage): void {
    const budget = this.sharedBudget(u);
    const hint = this.opts.sizeHintBytes ?? null;
    // The inode table is walked only where the answer can change the decision: a hint, a finite
    // budget, and files on disk.
    const diskWorkingSet =
      hint !== null && Number.isFinite(u.markBytes) && this.mount.usage().filesDisk > 0
        ? diskWorkingSetBytes({ nowMs: monotonicMs(), inodes: this.snapshotInodes() }, this.policy)
        : 0;
    const decision = decidePlacement(
      { sizeHintBytes: hint, budgetBytes: budget, memoryTierBytes: u.memoryTierBytes, diskWorkingSetBytes: diskWorkingSet },
      this.policy,
    );
    this.mount.setPlacement({
      memoryBudget: budget,
      newFilesOnDisk: decision.tier === 'disk',
      // The hint is one file's size: each open memory-tier file may grow to it, so the native
      // rule places a further new file in memory only if all of them still fit.
      reservePerOpenFile: hint === null ? 0 : scaled(hint, this.policy),
    });
  }

  private raiseAlarm(shortfallBytes: number, oomPaused: boolean, resolve: () => void): void {
    const now = monotonicMs();
    if (!oomPaused && now - this.lastAlarmMs < 250) return; // one alarm per stall, not per tick
    this.lastAlarmMs = now;
    this.stats.alarms++;
    this.emit('alarm', { shortfallBytes, oomPaused, usage: this.usage(), resolve });
  }
}
