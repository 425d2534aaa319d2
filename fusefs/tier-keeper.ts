import {
  needsWriteback,
  placementAdmission,
  planEviction,
  planPromote,
  planSpill,
  shrinkReady,
  type InodeStat,
  type PolicyConfig,
  type SpillDecision,
  type TierBudget,
  type TierSnapshot,
} from '../policy';
import { CgroupBudget, type CgroupBudgetOptions, type ShrinkResult } from './cgroup-budget';
import { FusefsError } from './errors';
import type { KeeperTotals, TieredStore } from './tiered-store';
import type { NativeInodeStat } from './native';

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

/** What one spill pass or eviction did (the control API's eviction report). */
export interface EvictionReport {
  requestedBytes: number;
  freedBytes: number;
  spilled: number;
  /** What could not be freed: the rest is held by open (or busy) files. */
  shortfallBytes: number;
  /** Victims that were open (or opened while copied) and stayed where they were. */
  busy: number;
  /** Memory-tier bytes after the pass. */
  memoryBytes: number;
}

export interface FixedBudgetOptions {
  kind: 'fixed';
  /** Bytes the memory tier may hold. */
  budget: number;
  policy: PolicyConfig;
  newFilesOnDisk?: boolean;
  /** Promote closed disk-tier files into the room by itself (default true). */
  promote?: boolean;
}

export type BudgetSpec = FixedBudgetOptions | ({ kind: 'cgroup' } & CgroupBudgetOptions);

/** A budget set by hand: no cgroup, the memory tier alone counts against it. */
class FixedBudget {
  readonly kind = 'fixed' as const;
  readonly stats: KeeperTotals = { spills: 0, spilledBytes: 0, promotions: 0, promotedBytes: 0, moveErrors: 0, alarms: 0, writebacks: 0 };
  constructor(
    public bytes: number,
    readonly policy: PolicyConfig,
    readonly newFilesOnDisk: boolean,
    readonly promote: boolean,
  ) {}
  readonly sizeHintBytes = null;
  readonly shrinking = false;
  read(): TierBudget {
    return { kind: 'fixed', bytes: this.bytes, newFilesOnDisk: this.newFilesOnDisk, promote: this.promote };
  }
}

type Source = FixedBudget | CgroupBudget;

/**
 * The one owner of a mount's tiers. It takes a budget source (a fixed budget, or the container's
 * memory cgroup: CgroupBudget) and applies the rules of policy/tiers.ts with one loop, one queue
 * and one clock: a pass writes the disk tier back if the rules say so, spills what they choose,
 * promotes into the room they give, and pushes the memory tier's admission (the room new files
 * may take) to the native side, which enforces it at create and at open for writing. Passes are
 * triggered by closes (the keeper is the only user of the mount's onClose), by the cgroup's
 * watcher, by requests, and by the time the rules say to look again. Only closed inodes move
 * (the native side refuses open ones, and abandons a move an open races with). Switching the
 * source (attach or detach a cgroup) waits for the pass in progress.
 */
export class TierKeeper {
  private source: Source | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private pending = false;
  private timer: NodeJS.Timeout | undefined;
  private timerAtMs = Infinity;
  private closed = false;
  /** Bytes over a fixed budget held in memory by open files at the end of the last pass. */
  overBudgetOpenBytes = 0;
  /** Errors of passes nobody awaits (closes, the clock, the watcher). */
  onError: ((what: string, error: unknown) => void) | undefined;

  constructor(private readonly mount: TieredStore) {}

  /** The counters of the source in force (zeros while there is none). */
  get totals(): KeeperTotals {
    return this.source?.stats ?? { spills: 0, spilledBytes: 0, promotions: 0, promotedBytes: 0, moveErrors: 0, alarms: 0, writebacks: 0 };
  }
  /** The cgroup budget, while the mount follows one. */
  get cgroup(): CgroupBudget | undefined {
    return this.source?.kind === 'cgroup' ? this.source : undefined;
  }

  /** Switches to `spec` (the pass in progress ends first) and runs a pass under it. */
  async use(spec: BudgetSpec): Promise<EvictionReport> {
    const next: Source =
      spec.kind === 'fixed'
        ? new FixedBudget(spec.budget, spec.policy, spec.newFilesOnDisk ?? false, spec.promote ?? true)
        : new CgroupBudget(this.mount, this, spec);
    await this.replace(next);
    if (next.kind === 'cgroup') next.start(() => this.kick());
    // Placement from here on is this source's, also before its first pass ends.
    this.pushAdmission(next, this.snapshot(next));
    return this.enqueue(() => this.pass(next, false));
  }

  /** Ties the mount to a memory cgroup (see CgroupBudget). */
  async useCgroup(opts: CgroupBudgetOptions): Promise<CgroupBudget> {
    await this.use({ kind: 'cgroup', ...opts });
    return this.source as CgroupBudget;
  }

  /** Stops using `source` if it is the one in force: the keeper then has no budget (placement stays as last pushed). */
  async release(source: CgroupBudget): Promise<void> {
    if (this.source === source) await this.replace(undefined);
    else await source.stop();
  }

  private async replace(next: Source | undefined): Promise<void> {
    const old = this.source;
    this.source = undefined;
    this.clearTimer();
    await this.queue.catch(() => undefined);
    if (old?.kind === 'cgroup') await old.stop();
    this.source = next;
    this.overBudgetOpenBytes = 0;
    // A disk-tier close may make room to promote; a memory-tier close may let a file over the
    // budget (or one that starves the disk tier's working set of page cache) be spilled.
    this.mount.onClose(next && !this.closed ? () => this.kick() : null);
  }

  private sourceOfKind<K extends Source['kind']>(kind: K, what: string): Extract<Source, { kind: K }> {
    const s = this.source;
    if (s?.kind === kind) return s as Extract<Source, { kind: K }>;
    if (s?.kind === 'cgroup') {
      throw new FusefsError('E_BAD_OPTION', `${what}: the mount follows its cgroup (${s.cgroupPath}): it promotes by itself, charged to the container, and its budget is the cgroup's limit`);
    }
    throw new FusefsError('E_BAD_OPTION', `${what}: the mount has ${s ? 'a fixed budget' : 'no budget'}, not a cgroup`);
  }

  /** Sets a fixed budget, spills down to it, or promotes into the room it gives. */
  setBudget(bytes: number): Promise<EvictionReport> {
    const s = this.sourceOfKind('fixed', 'set-budget');
    return this.enqueue(() => {
      s.bytes = bytes;
      return this.pass(s, false);
    });
  }

  /** One pass now. */
  rebalance(): Promise<EvictionReport> {
    const s = this.source;
    return s ? this.enqueue(() => this.pass(s, false)) : Promise.resolve(emptyReport(0, 0));
  }

  /** Moves at least `bytes` of the memory tier to disk (closed, cold files first). */
  evict(bytes: number, urgent = false): Promise<EvictionReport> {
    const s = this.source;
    if (!s) return Promise.resolve(emptyReport(bytes, this.mount.tierBytes().memory));
    return this.enqueue(async () => {
      const snap = this.snapshot(s);
      const plan = planEviction(snap, bytes, s.policy, { urgent });
      let freed = 0;
      const report = await this.spill(s, snap, plan.victims, (moved) => (freed += moved) >= bytes, bytes);
      return report;
    });
  }

  /** Promotes into the room under a fixed budget now, also when automatic promotion is off (the caller asked). */
  promoteNow(): Promise<{ promoted: number; bytes: number }> {
    const s = this.sourceOfKind('fixed', 'promote');
    return this.enqueue(async () => {
      const snap = this.snapshot(s);
      const decision = planPromote({ ...snap, budget: { ...s.read(), promote: true } as TierBudget }, s.policy);
      return this.promote(s, decision.plan.promotions);
    });
  }

  /** A cgroup's shrink: an urgent pass under the lower mark, the disk tier written back, then the verdict. */
  async shrink(targetLimitBytes: number): Promise<Omit<ShrinkResult, 'elapsedMs'>> {
    const s = this.sourceOfKind('cgroup', 'shrink');
    const before = s.stats.spilledBytes;
    await this.enqueue(() => this.pass(s, true));
    // The limit can only go down once the container's dirty page cache is written back: v1
    // reclaims clean pages on a lower limit, but gives up (EBUSY) on dirty ones.
    await this.mount.syncDiskTier();
    const u = s.usage();
    return {
      ready: shrinkReady(u.usageBytes, targetLimitBytes, s.policy.headroom),
      targetLimitBytes,
      usageBytes: u.usageBytes,
      spilledBytes: s.stats.spilledBytes - before,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.replace(undefined);
  }

  /** Coalesces triggers: at most one pass queued behind the one running. */
  private kick(): void {
    const s = this.source;
    if (this.closed || this.pending || !s) return;
    this.pending = true;
    this.enqueue(() => {
      this.pending = false;
      return this.pass(s, false);
    }).catch((e) => this.reportError('rebalance', e));
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job, job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private reportError(what: string, e: unknown): void {
    if (this.closed) return;
    // A container's cgroup goes away before its mount is detached (docker removes it first): the
    // passes until the detach fail to read it, which is expected, not worth a log line each.
    const gone = (e as { code?: unknown })?.code === 'E_NO_CGROUP';
    if (!gone) this.onError?.(what, e);
    this.cgroup?.emit('keeper-error', e as Error);
  }

  /** The counters now; the inode table is walked only if a rule reads it. */
  private snapshot(s: Source): TierSnapshot {
    const usage = this.mount.usage();
    const memory = this.mount.tierBytes().memory;
    const budget = s.read();
    const mount = this.mount;
    let inodes: InodeStat[] | undefined;
    return {
      nowMs: monotonicMs(),
      budget,
      sizeHintBytes: s.sizeHintBytes,
      memoryTierBytes: memory,
      filesDisk: usage.filesDisk,
      openDisk: usage.openDisk,
      get inodes() {
        return (inodes ??= mount.inodeStats().map(toPolicyInode));
      },
    };
  }

  private pushAdmission(s: Source, snap: TierSnapshot): void {
    const a = placementAdmission(snap, s.policy);
    this.mount.setPlacement({ memoryBudget: a.memoryCapBytes, newFileRoom: a.newFileRoomBytes, reservePerOpenFile: a.reservePerOpenFileBytes });
  }

  private async pass(s: Source, urgent: boolean): Promise<EvictionReport> {
    if (this.source !== s || this.closed) return emptyReport(0, 0);
    // The one clock: the cgroup is looked at every interval (set first, so a pass that throws
    // still leaves the next one scheduled); a fixed budget only when a rule said when.
    if (s.kind === 'cgroup') this.scheduleAt(monotonicMs() + s.intervalMs);
    let snap = this.snapshot(s);
    if (needsWriteback(snap, s.policy)) {
      s.stats.writebacks++;
      await this.mount.syncDiskTier();
      snap = this.snapshot(s);
    }
    const spill = planSpill(snap, s.policy, urgent);
    const report = await this.applySpill(s, snap, spill);
    if (spill.reason !== 'none') snap = this.snapshot(s);
    if (s.kind === 'fixed') this.overBudgetOpenBytes = Math.max(0, report.memoryBytes - s.bytes);
    // Over the budget or the mark nothing is promoted in the same pass (the room is not there).
    let recheckAtMs: number | null = null;
    if (spill.reason === 'none' || spill.reason === 'working-set') {
      const promote = planPromote(snap, s.policy);
      recheckAtMs = promote.recheckAtMs;
      if (promote.plan.promotions.length > 0) {
        await this.promote(s, promote.plan.promotions);
        snap = this.snapshot(s);
        report.memoryBytes = memoryBytesOf(snap.inodes);
      }
    }
    if (this.source !== s) return report;
    this.pushAdmission(s, snap);
    if (recheckAtMs !== null) this.scheduleAt(recheckAtMs + 5);
    if (s.kind === 'cgroup') s.emit('usage', s.usage());
    return report;
  }

  private async applySpill(s: Source, snap: TierSnapshot, spill: SpillDecision): Promise<EvictionReport> {
    if (spill.reason === 'none') return emptyReport(0, s.kind === 'fixed' ? memoryBytesOf(snap.inodes) : snap.memoryTierBytes);
    let freed = 0;
    const stopAt = spill.stopAtUsageBytes;
    const enough =
      stopAt !== undefined && s.kind === 'cgroup'
        ? () => s.usage().usageBytes <= stopAt
        : (moved: number) => (freed += moved) >= spill.bytesToFree;
    const report = await this.spill(s, snap, spill.plan.victims, enough, spill.bytesToFree);
    if (spill.reason === 'over-mark' && s.kind === 'cgroup' && spill.plan.shortfallBytes > 0) {
      const u = s.usage();
      if (u.usageBytes > u.markBytes) s.raiseAlarm(u.usageBytes - u.markBytes, false, () => undefined);
    }
    return report;
  }

  /** Moves victims to disk in order until `enough(bytes this one freed)` says so. */
  private async spill(
    s: Source,
    snap: TierSnapshot,
    victims: readonly number[],
    enough: (movedBytes: number) => boolean,
    requestedBytes: number,
  ): Promise<EvictionReport> {
    const report = emptyReport(requestedBytes, 0);
    const sizeOf = new Map(snap.inodes.map((i) => [i.ino, i.sizeBytes]));
    for (const ino of victims) {
      if (this.source !== s) break;
      const result = await this.mount.moveNow(ino, 'disk');
      let moved = 0;
      if (result.code === 'OK') {
        moved = sizeOf.get(ino) ?? result.bytes;
        report.freedBytes += moved;
        report.spilled += 1;
        s.stats.spills += 1;
        s.stats.spilledBytes += result.bytes;
        if (s.kind === 'cgroup') s.emit('spill', { ino, bytes: result.bytes });
      } else if (result.code === 'EBUSY' || result.code === 'EINPROGRESS') {
        report.busy += 1; // open now, opened while we copied, or another move of it runs: it stays where it was
      } else if (result.code !== 'ENOENT' && result.code !== 'EALREADY') {
        s.stats.moveErrors += 1;
        this.reportError(`spill of inode ${ino}`, new Error(result.code));
        break;
      }
      // ENOENT (unlinked meanwhile) and EALREADY (already on disk) free nothing and need nothing.
      if (enough(moved)) break;
    }
    report.memoryBytes = memoryBytesOf(this.mount.inodeStats().map(toPolicyInode));
    report.shortfallBytes = Math.max(0, requestedBytes - report.freedBytes);
    return report;
  }

  private async promote(s: Source, inos: readonly number[]): Promise<{ promoted: number; bytes: number }> {
    const done = { promoted: 0, bytes: 0 };
    for (const ino of inos) {
      // A shrink asked meanwhile wins: promoting now would only have to be spilled again.
      if (this.source !== s || this.closed || s.shrinking) break;
      const copier = s.kind === 'cgroup' ? s.chargedCopier : undefined;
      let bytes: number | null;
      if (copier) {
        bytes = await this.chargedPromote(copier, ino);
      } else {
        const result = await this.mount.moveNow(ino, 'memory');
        if (result.code !== 'OK' && result.code !== 'EBUSY' && result.code !== 'EINPROGRESS' && result.code !== 'ENOENT' && result.code !== 'EALREADY') {
          s.stats.moveErrors += 1;
          break; // ENOSPC: the memory tier's tmpfs is full (its size is the mount's size quota); or a failed copy
        }
        bytes = result.code === 'OK' ? result.bytes : null;
      }
      if (bytes === null) continue;
      done.promoted += 1;
      done.bytes += bytes;
      s.stats.promotions += 1;
      s.stats.promotedBytes += bytes;
      if (s.kind === 'cgroup') s.emit('promote', { ino, bytes, charged: copier !== undefined });
    }
    return done;
  }

  /** A promotion copied by the helper in the container's cgroup, so the new pages are charged there. */
  private async chargedPromote(copier: NonNullable<CgroupBudget['chargedCopier']>, ino: number): Promise<number | null> {
    // The file's pages on the disk tier are still the container's dirty page cache: written back
    // first, they are reclaimable while the copy charges the same bytes again as shmem. Without
    // this, cgroup v1 (no per-cgroup dirty throttling) can OOM-kill in the middle of a promotion.
    await this.mount.syncDiskTier();
    let ticket;
    try {
      ticket = this.mount.beginMove(ino, 'memory');
    } catch {
      return null; // opened, unlinked or already moving: the next pass looks again
    }
    try {
      await copier.copy(ticket.srcFd, ticket.dstFd, ticket.size);
      return this.mount.commitMove(ticket.token) === 0 ? ticket.size : null;
    } catch (e) {
      this.mount.abortMove(ticket.token);
      throw e;
    }
  }

  private scheduleAt(atMs: number): void {
    if (!Number.isFinite(atMs) || this.closed) return;
    if (this.timer && this.timerAtMs <= atMs) return;
    this.clearTimer();
    this.timerAtMs = atMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAtMs = Infinity;
      this.kick();
    }, Math.max(0, atMs - monotonicMs()));
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAtMs = Infinity;
  }
}

function emptyReport(requestedBytes: number, memoryBytes: number): EvictionReport {
  return { requestedBytes, freedBytes: 0, spilled: 0, shortfallBytes: requestedBytes, busy: 0, memoryBytes };
}

function memoryBytesOf(inodes: readonly InodeStat[]): number {
  let bytes = 0;
  for (const i of inodes) if (i.tier === 'memory') bytes += i.sizeBytes;
  return bytes;
}
