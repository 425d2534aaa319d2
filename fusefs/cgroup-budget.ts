import { EventEmitter } from 'node:events';
import { DEFAULT_POLICY_CONFIG, type PolicyConfig, type TierBudget } from '../policy';
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
import type { KeeperTotals, TieredStore } from './tiered-store';

/**
 * The tier keeper's budget when the mount follows a container's memory cgroup (thesis 3.2.3,
 * 4.2.2, "the memory adapter"): the keeper keeps the container's `rss + shmem` (its own memory
 * plus the memory tier, whose pages are charged to it) at or below `limit − headroom`. This class
 * is the cgroup side only: reading the cgroup, the watcher's triggers, the OOM guard and its
 * alarms, the shrink target, and charged copies. The rules are policy/tiers.ts; the loop is the
 * keeper's.
 *
 * Who pays for which page:
 * - Passthrough writes into the memory tier are charged to the writer: the container.
 * - A promotion's copy runs in a small helper process that first joins the container's cgroup
 *   (ChargedCopier), so the new memory-tier pages land on the container too, never on the daemon.
 * - A spill's copy runs in the daemon: the disk file's page cache is reclaimable, and the
 *   container's shmem is uncharged when the memory-tier file closes.
 * - Without passthrough (writeback mode) the daemon writes the memory tier itself, so its pages
 *   sit in the daemon's cgroup: usage() then adds the memory tier's bytes to the container's
 *   usage, so the budget still bites where it belongs.
 */
export interface CgroupBudgetOptions {
  /** The container's memory cgroup directory (v1 or v2). */
  cgroupPath: string;
  headroom?: HeadroomConfigInput;
  policy?: PolicyConfig;
  /** A watcher shared by every cgroup budget of a daemon (one timer for all); default: its own. */
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

export interface CgroupUsage {
  /** What counts against the container: rss + shmem (+ the memory tier in writeback mode). */
  usageBytes: number;
  limitBytes: number;
  markBytes: number;
  memoryTierBytes: number;
  diskTierBytes: number;
  /** The function's own memory: usage less the memory tier. */
  functionBytes: number;
}

export interface CgroupAlarm {
  shortfallBytes: number;
  oomPaused: boolean;
  usage: CgroupUsage;
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

/** What a budget asks of the tier keeper that follows it (TierKeeper, which creates the budget). */
export interface BudgetKeeper {
  shrink(targetLimitBytes: number): Promise<Omit<ShrinkResult, 'elapsedMs'>>;
  rebalance(): Promise<unknown>;
  evict(bytes: number, urgent?: boolean): Promise<unknown>;
  release(source: CgroupBudget): Promise<void>;
}

interface CgroupBudgetEvents {
  usage: [CgroupUsage];
  alarm: [CgroupAlarm];
  'shrink-ready': [ShrinkResult];
  spill: [{ ino: number; bytes: number }];
  promote: [{ ino: number; bytes: number; charged: boolean }];
  'keeper-error': [Error];
}

const monotonicMs = () => Number(process.hrtime.bigint() / 1_000_000n);

export class CgroupBudget extends EventEmitter<CgroupBudgetEvents> {
  readonly kind = 'cgroup' as const;
  private readonly cgroup: MemoryCgroup;
  private readonly ownsWatcher: boolean;
  private readonly watcher: CgroupWatcher;
  private readonly headroom: HeadroomConfig;
  readonly policy: PolicyConfig;
  private watch?: CgroupWatch;
  private guard?: OomGuard;
  private copier?: ChargedCopier;
  private closed = false;
  /** A lower target requested by the manager (shrink), in force until the limit follows. */
  private targetLimit: number | undefined;
  private lastAlarmMs = 0;
  /** An OOM-paused alarm waiting for its loan: resolved as soon as the limit goes up. */
  private pendingOomResolve: (() => void) | undefined;
  private readonly watcherListeners: Array<[string, (e: never) => void]> = [];
  /** The keeper's counters while this budget is in force (spills, promotions, alarms, writebacks). */
  readonly stats: KeeperTotals = { spills: 0, spilledBytes: 0, promotions: 0, promotedBytes: 0, moveErrors: 0, alarms: 0, writebacks: 0 };

  constructor(private readonly mount: TieredStore, private readonly keeper: BudgetKeeper, private readonly opts: CgroupBudgetOptions) {
    super();
    this.cgroup = MemoryCgroup.fromPath(opts.cgroupPath);
    this.ownsWatcher = !opts.watcher;
    this.watcher = opts.watcher ?? new CgroupWatcher({ intervalMs: 20 });
    const base = opts.policy ?? DEFAULT_POLICY_CONFIG;
    // The policy's headroom unless the caller gives one: the manager plans with the same figure.
    this.headroom = parseHeadroomConfig(opts.headroom ?? base.headroom);
    this.policy = { ...base, headroom: this.headroom };
  }

  get cgroupPath(): string {
    return this.opts.cgroupPath;
  }
  get sizeHintBytes(): number | null {
    return this.opts.sizeHintBytes ?? null;
  }
  get intervalMs(): number {
    return this.opts.rebalanceIntervalMs ?? 500;
  }
  get shrinking(): boolean {
    return this.targetLimit !== undefined;
  }
  /** Promotions copied by the helper in the container's cgroup; undefined: moved in the daemon. */
  get chargedCopier(): ChargedCopier | undefined {
    return this.copier;
  }

  /** Subscribes the cgroup's triggers to `kick` (the keeper's pass). */
  start(kick: () => void): void {
    this.watch = this.watcher.watch(this.cgroup, { mark: 'auto', headroom: this.headroom, usageStepBytes: 1 << 20 });
    const mine = (e: { cgroup: MemoryCgroup }) => e.cgroup === this.cgroup;
    const on = (event: 'usage' | 'over-mark' | 'under-mark', fn: (e: { cgroup: MemoryCgroup }) => void) => {
      this.watcher.on(event, fn);
      this.watcherListeners.push([event, fn as (e: never) => void]);
    };
    on('usage', (e) => mine(e) && kick());
    on('over-mark', (e) => mine(e) && kick());
    on('under-mark', (e) => mine(e) && kick());
    const onLimit = (e: { cgroup: MemoryCgroup; limitBytes: number; previousBytes: number }) => {
      if (!mine(e)) return;
      if (e.limitBytes > e.previousBytes && this.pendingOomResolve) {
        // The manager's emergency loan arrived: release the paused task now, not at the watchdog.
        const resolve = this.pendingOomResolve;
        this.pendingOomResolve = undefined;
        resolve();
      }
      if (this.targetLimit !== undefined && e.limitBytes <= this.targetLimit) this.targetLimit = undefined;
      kick();
    };
    this.watcher.on('limit', onLimit);
    this.watcherListeners.push(['limit', onLimit as (e: never) => void]);
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
  }

  /** Current figures (reads the cgroup now). */
  usage(): CgroupUsage {
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

  /** The budget as the keeper's rules read it. */
  read(): TierBudget {
    const u = this.usage();
    return {
      kind: 'cgroup',
      limitBytes: u.limitBytes,
      usageBytes: u.usageBytes,
      markBytes: u.markBytes,
      functionBytes: u.functionBytes,
      dirtyBytes: this.dirtyBytes(),
      shrinking: this.shrinking,
    };
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

  /**
   * The manager asks to lower the limit to `targetLimitBytes`: the keeper spills until usage fits
   * under the new mark, then says whether the manager may lower it now (cgroup v1 refuses a limit
   * below usage). The lower mark stays in force until the limit follows.
   */
  requestShrink(targetLimitBytes: number): Promise<ShrinkResult> {
    const t0 = monotonicMs();
    this.targetLimit = targetLimitBytes;
    return this.keeper.shrink(targetLimitBytes).then((r) => {
      const result = { ...r, elapsedMs: monotonicMs() - t0 };
      this.emit('shrink-ready', result);
      return result;
    });
  }

  /** Cancels a shrink the manager gave up on. */
  cancelShrink(): void {
    this.targetLimit = undefined;
    this.keeper.rebalance().catch(() => undefined);
  }

  /**
   * Moves at least `bytes` of the memory tier to disk (closed, cold files first); resolves with the
   * usage after. `urgent` (the manager's evictions) may move a file again inside the anti-thrash window.
   */
  async evictBytes(bytes: number, urgent = true): Promise<CgroupUsage> {
    await this.keeper.evict(bytes, urgent);
    return this.usage();
  }

  /** Raised by the keeper when a spill over the mark ran out of files to move; one per stall. */
  raiseAlarm(shortfallBytes: number, oomPaused: boolean, resolve: () => void): void {
    const now = monotonicMs();
    if (!oomPaused && now - this.lastAlarmMs < 250) return; // one alarm per stall, not per tick
    this.lastAlarmMs = now;
    this.stats.alarms++;
    this.emit('alarm', { shortfallBytes, oomPaused, usage: this.usage(), resolve });
  }

  /** The keeper stops following this cgroup (it goes back to no budget). */
  async close(): Promise<void> {
    await this.keeper.release(this);
  }

  /** Called by the keeper once it no longer uses this budget. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const [event, fn] of this.watcherListeners) this.watcher.off(event as 'usage', fn as never);
    if (this.copier) this.mount.setChargeAgent({ helper: '', cgroupDir: '' });
    this.guard?.close();
    this.watch?.unwatch();
    if (this.ownsWatcher) this.watcher.close();
    await this.copier?.close();
    this.cgroup.close();
  }
}
