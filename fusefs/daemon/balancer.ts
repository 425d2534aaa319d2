import { planEviction, planPromotion, type InodeStat, type PolicyConfig } from '../../policy/index';
import type { EphemeraMount } from '../mount';
import type { NativeInodeStat } from '../native';
import type { EvictionReport } from './messages';

export interface TierBalancerOptions {
  /** Bytes the memory tier may hold. */
  budget: number;
  policy: PolicyConfig;
  newFilesOnDisk?: boolean;
  /**
   * Promote closed disk-tier inodes when the budget has room. Off when a memory adapter owns the
   * mount: its promotions must be charged to the container's cgroup, ours would land on the daemon.
   */
  promote?: boolean;
  /** Coalesces a burst of close events into one pass. */
  closeDebounceMs?: number;
  onError?: (what: string, error: unknown) => void;
}

/** CLOCK_MONOTONIC in ms: the clock the native inode table stamps opens, closes and moves with (libuv's hrtime is CLOCK_MONOTONIC). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

/** The native table's 0 means "never"; the policy says null. Sizes are allocated bytes: what a tier actually holds. */
export function toPolicyInode(s: NativeInodeStat): InodeStat {
  return {
    ino: s.ino,
    tier: s.tier,
    sizeBytes: s.allocated,
    openCount: s.openCount,
    lastOpenMs: s.lastOpenMs > 0 ? s.lastOpenMs : null,
    lastCloseMs: s.lastCloseMs > 0 ? s.lastCloseMs : null,
    lastMoveMs: s.lastMoveMs > 0 ? s.lastMoveMs : null,
  };
}

/**
 * Keeps one mount's memory tier within its budget. New files are placed natively (memory while the
 * tier is under budget, else disk: no JavaScript per create); this enforces the budget for files
 * already there: lowering it spills closed inodes (victims from policy.planEviction), and room
 * coming back (a raised budget, a close) promotes closed disk inodes (policy.planPromotion). Only
 * closed inodes can move (the native side refuses open ones, and abandons a move an open races
 * with), so what stays over budget is reported as held by open files. Every pass runs on one queue,
 * so two moves of one mount never overlap.
 */
export class TierBalancer {
  private budgetBytes: number;
  private newFilesOnDisk: boolean;
  private queue: Promise<unknown> = Promise.resolve();
  private closeTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  readonly totals = { spills: 0, spilledBytes: 0, promotions: 0, promotedBytes: 0, moveErrors: 0 };
  /** Bytes over budget held in memory by open files at the end of the last pass. */
  overBudgetOpenBytes = 0;

  constructor(
    private readonly mount: EphemeraMount,
    private readonly options: TierBalancerOptions,
  ) {
    this.budgetBytes = options.budget;
    this.newFilesOnDisk = options.newFilesOnDisk ?? false;
    this.applyPlacement();
    mount.onClose(() => this.scheduleAfterClose());
  }

  get budget(): number {
    return this.budgetBytes;
  }

  private applyPlacement(): void {
    this.mount.setPlacement({ memoryBudget: this.budgetBytes, newFilesOnDisk: this.newFilesOnDisk });
  }

  private enqueue<T>(pass: () => Promise<T>): Promise<T> {
    const run = this.queue.then(pass, pass);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private scheduleAfterClose(): void {
    if (this.closed || this.closeTimer) return;
    this.closeTimer = setTimeout(() => {
      this.closeTimer = undefined;
      if (this.closed) return;
      this.enqueue(() => this.rebalanceNow()).catch((e) => this.options.onError?.('rebalance after close', e));
    }, this.options.closeDebounceMs ?? 10);
    this.closeTimer.unref();
  }

  private snapshot(): { nowMs: number; inodes: InodeStat[]; memoryBytes: number } {
    const inodes = this.mount.inodeStats().map(toPolicyInode);
    const memoryBytes = inodes.reduce((sum, i) => (i.tier === 'memory' ? sum + i.sizeBytes : sum), 0);
    return { nowMs: monotonicMs(), inodes, memoryBytes };
  }

  /** Sets the budget, spills down to it, or promotes into the room it gives. */
  setBudget(budget: number): Promise<EvictionReport> {
    return this.enqueue(async () => {
      this.budgetBytes = budget;
      this.applyPlacement();
      return this.rebalanceNow();
    });
  }

  /** Moves at least `bytes` of closed memory-tier files to disk (as far as there are any). */
  evict(bytes: number, urgent = false): Promise<EvictionReport> {
    return this.enqueue(() => this.spill(bytes, urgent));
  }

  /** One pass: over budget → spill; under → promote into the room. */
  rebalance(): Promise<EvictionReport> {
    return this.enqueue(() => this.rebalanceNow());
  }

  /** Promotes into the room under the budget now, also when automatic promotion is off (the caller asked). */
  promoteNow(): Promise<{ promoted: number; bytes: number }> {
    return this.enqueue(() => this.promote());
  }

  private async rebalanceNow(): Promise<EvictionReport> {
    const { memoryBytes } = this.snapshot();
    const excess = memoryBytes - this.budgetBytes;
    const report = await this.spill(Math.max(0, excess), false);
    this.overBudgetOpenBytes = Math.max(0, report.memoryBytes - this.budgetBytes);
    if (excess < 0 && (this.options.promote ?? true)) {
      await this.promote();
      report.memoryBytes = this.snapshot().memoryBytes;
    }
    return report;
  }

  private async spill(bytes: number, urgent: boolean): Promise<EvictionReport> {
    const report: EvictionReport = { requestedBytes: bytes, freedBytes: 0, spilled: 0, shortfallBytes: 0, busy: 0, memoryBytes: 0 };
    if (bytes > 0) {
      const snap = this.snapshot();
      const sizeOf = new Map(snap.inodes.map((i) => [i.ino, i.sizeBytes]));
      const plan = planEviction(snap, bytes, this.options.policy, { urgent });
      for (const ino of plan.victims) {
        if (report.freedBytes >= bytes) break;
        const result = await this.mount.moveNow(ino, 'disk');
        if (result.code === 'OK') {
          const freed = sizeOf.get(ino) ?? 0;
          report.freedBytes += freed;
          report.spilled += 1;
          this.totals.spills += 1;
          this.totals.spilledBytes += result.bytes;
        } else if (result.code === 'EBUSY' || result.code === 'EINPROGRESS') {
          report.busy += 1; // open now, opened while we copied, or another move of it runs: it stays where it was
        } else if (result.code !== 'ENOENT' && result.code !== 'EALREADY') {
          this.totals.moveErrors += 1;
          this.options.onError?.(`spill of inode ${ino}`, new Error(result.code));
          break;
        }
        // ENOENT (unlinked meanwhile) and EALREADY (already on disk) free nothing and need nothing.
      }
    }
    report.memoryBytes = this.snapshot().memoryBytes;
    report.shortfallBytes = Math.max(0, bytes - report.freedBytes);
    return report;
  }

  private async promote(): Promise<{ promoted: number; bytes: number }> {
    const snap = this.snapshot();
    const room = this.budgetBytes - snap.memoryBytes;
    const done = { promoted: 0, bytes: 0 };
    if (room <= 0) return done;
    // Only closed inodes can move, so the policy's open-first list is narrowed to closed ones,
    // which it then takes most recently closed first.
    const closedOnDisk = snap.inodes.filter((i) => i.tier === 'disk' && i.openCount === 0);
    // No quiet period: that guards a container's memory cgroup against dirty page cache beside a
    // promoted copy; a budget without a cgroup has no such edge (the adapter owns cgroup mounts).
    const config: PolicyConfig = { ...this.options.policy, eviction: { ...this.options.policy.eviction, promoteClosed: true, promoteQuietMs: 0 } };
    const plan = planPromotion({ nowMs: snap.nowMs, inodes: closedOnDisk }, room, config);
    this.retryAfterAntiThrash(closedOnDisk, snap.nowMs, plan.promotions);
    for (const ino of plan.promotions) {
      const result = await this.mount.moveNow(ino, 'memory');
      if (result.code === 'OK') {
        done.promoted += 1;
        done.bytes += result.bytes;
        this.totals.promotions += 1;
        this.totals.promotedBytes += result.bytes;
      } else if (result.code !== 'EBUSY' && result.code !== 'EINPROGRESS' && result.code !== 'ENOENT' && result.code !== 'EALREADY') {
        this.totals.moveErrors += 1;
        break; // ENOSPC: the memory tier's tmpfs is full (its size is the mount's size quota); or a failed copy
      }
    }
    return done;
  }

  /**
   * Inodes the anti-thrash window held back get another chance when it ends; without this, room
   * coming back right after a spill would promote nothing until some unrelated close.
   */
  private retryAfterAntiThrash(candidates: InodeStat[], nowMs: number, chosen: readonly number[]): void {
    const window = this.options.policy.eviction.antiThrashWindowMs;
    const heldBack = candidates.filter((i) => !chosen.includes(i.ino) && i.lastMoveMs !== null && nowMs - i.lastMoveMs < window);
    if (heldBack.length === 0 || this.retryTimer || this.closed) return;
    const wait = Math.min(...heldBack.map((i) => window - (nowMs - i.lastMoveMs!))) + 5;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.closed) this.enqueue(() => this.rebalanceNow()).catch((e) => this.options.onError?.('rebalance after the anti-thrash window', e));
    }, wait);
    this.retryTimer.unref();
  }

  /** Stops reacting to closes and waits for the pass in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.closeTimer = this.retryTimer = undefined;
    this.mount.onClose(null);
    await this.queue;
  }
}
