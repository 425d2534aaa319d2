import { scaled, type PolicyConfig } from './config';
import { planEviction, planPromotion, type EvictionPlan, type PromotionPlan } from './eviction';
import { diskWorkingSetBytes, workingSetExcessBytes } from './placement';
import type { InodeStat } from './snapshots';

/**
 * The tier keeper's rules (fusefs/tier-keeper.ts applies them): where new files may go, what to
 * spill, what to promote, when to write the disk tier back and when a shrink is ready, all over one
 * snapshot, for both budget sources.
 */

/** What the memory tier may hold, as the keeper's budget source reads it now. */
export type TierBudget =
  | {
      /** A budget set by hand (a node-daemon mount without a cgroup, `ephemera mount --budget`). */
      readonly kind: 'fixed';
      readonly bytes: number;
      /** The mount's setting: new files on disk (promoted when closed) instead of memory while under the budget. */
      readonly newFilesOnDisk: boolean;
      /** Promote closed disk-tier files into the room under the budget by itself. */
      readonly promote: boolean;
    }
  | {
      /** The container's memory cgroup: the memory tier and the disk tier's page cache share its limit. */
      readonly kind: 'cgroup';
      readonly limitBytes: number;
      /** rss + shmem (+ the memory tier in writeback mode, where the daemon holds its pages). */
      readonly usageBytes: number;
      /** What usage is kept under: min(limit, a shrink's target) − headroom; Infinity when unlimited. */
      readonly markBytes: number;
      /** The function's own memory: usage less the memory tier. */
      readonly functionBytes: number;
      /** Dirty and under-writeback page cache of the cgroup. */
      readonly dirtyBytes: number;
      /** A shrink is in progress (the manager asked for a lower limit): nothing is promoted. */
      readonly shrinking: boolean;
    };

/**
 * One look at a mount. The counters come from the store's own totals (cheap); `inodes` walks the
 * inode table and is read only by the rules that need it (the keeper makes it lazy: an idle pass
 * over hundreds of thousands of files must not walk them).
 */
export interface TierSnapshot {
  readonly nowMs: number;
  readonly budget: TierBudget;
  /** The profile's largest file F, bytes; null when not known. */
  readonly sizeHintBytes: number | null;
  readonly memoryTierBytes: number;
  /** Regular files on the disk tier, and how many of them are open. */
  readonly filesDisk: number;
  readonly openDisk: number;
  readonly inodes: readonly InodeStat[];
}

/**
 * What the native create and open-for-write paths enforce (fs.cc, no JavaScript per operation).
 * A new file goes to memory only if the memory tier, every open memory-tier file grown to the
 * reserve, and the new file at the reserve fit in `newFileRoomBytes` (with no reserve: while the
 * tier holds less than the room). An allocating fallocate on the memory tier past `memoryCapBytes`
 * is ENOSPC (an open file's pages cannot be spilled).
 */
export interface MemoryAdmission {
  readonly newFileRoomBytes: number;
  readonly reservePerOpenFileBytes: number;
  readonly memoryCapBytes: number;
  readonly reason: 'fixed-budget' | 'new-files-on-disk' | 'no-size-hint' | 'size-hint';
}

/** Bytes the memory tier shares with the disk tier's page cache: the mark less the function's own memory. */
export function sharedBudgetBytes(budget: TierBudget): number {
  if (budget.kind === 'fixed') return budget.bytes;
  return Number.isFinite(budget.markBytes) ? Math.max(0, budget.markBytes - budget.functionBytes) : Number.MAX_SAFE_INTEGER;
}

/**
 * Placement at create and at open for writing, as the room pushed to the native side. Without a
 * cgroup a file that outgrows memory only overshoots the budget (it is spilled once closed), so
 * files go to memory while the tier is under it. Under a cgroup a memory-tier file that outgrows
 * the limit while open fails with ENOMEM (design.md), so: no hint → `unknownSizeTier`; a hint →
 * memory only beside the disk tier's working set (policy.decidePlacement's rule, which the native
 * check with no other file open is), each open memory-tier file counted at the hint (two files
 * growing to the hint in a budget for one was an OOM kill: bench impact, 2 × 128 MiB at 150 MiB).
 */
export function placementAdmission(snapshot: TierSnapshot, config: PolicyConfig): MemoryAdmission {
  const b = snapshot.budget;
  const hint = snapshot.sizeHintBytes;
  const reserve = hint === null ? 0 : scaled(hint, config);
  if (b.kind === 'fixed') {
    return b.newFilesOnDisk
      ? { newFileRoomBytes: 0, reservePerOpenFileBytes: reserve, memoryCapBytes: b.bytes, reason: 'new-files-on-disk' }
      : { newFileRoomBytes: b.bytes, reservePerOpenFileBytes: reserve, memoryCapBytes: b.bytes, reason: 'fixed-budget' };
  }
  const budget = sharedBudgetBytes(b);
  if (hint === null) {
    const room = config.placement.unknownSizeTier === 'disk' ? 0 : budget;
    return { newFileRoomBytes: room, reservePerOpenFileBytes: 0, memoryCapBytes: budget, reason: 'no-size-hint' };
  }
  // The inode table is walked only where the answer can change: a finite budget and files on disk.
  const workingSet = Number.isFinite(b.markBytes) && snapshot.filesDisk > 0 ? diskWorkingSetBytes(snapshot, config) : 0;
  return { newFileRoomBytes: Math.max(0, budget - workingSet), reservePerOpenFileBytes: reserve, memoryCapBytes: budget, reason: 'size-hint' };
}

/** The native create check (fs.cc NewFileFitsInMemory), for tests and for explaining a placement. */
export function admitsNewFile(admission: MemoryAdmission, memoryTierBytes: number, openMemoryFiles: number): boolean {
  const { newFileRoomBytes: room, reservePerOpenFileBytes: reserve } = admission;
  if (reserve === 0) return memoryTierBytes < room;
  return memoryTierBytes + reserve * (openMemoryFiles + 1) <= room;
}

/**
 * The native open-for-write check (fs.cc ReopenFitsInMemory): the new-file rule with this file's
 * own bytes set aside; from its size it may grow by the reserve again (a log reopened for
 * appending outgrows any hint: counted at max(reserve, size), a 4 MiB-hinted log appended to
 * 160 MiB in 128 MiB stayed in memory and was OOM-killed, test/store/ordinary).
 */
export function admitsOpenForWrite(
  admission: MemoryAdmission,
  memoryTierBytes: number,
  file: { sizeBytes: number; allocatedBytes: number },
  otherOpenMemoryFiles: number,
): boolean {
  const { newFileRoomBytes: room, reservePerOpenFileBytes: reserve } = admission;
  const committed = Math.max(0, memoryTierBytes - file.allocatedBytes) + reserve * otherOpenMemoryFiles;
  if (reserve === 0) return committed + file.sizeBytes < room;
  return committed + file.sizeBytes + reserve <= room;
}

export interface SpillDecision {
  readonly reason: 'over-budget' | 'over-mark' | 'working-set' | 'none';
  readonly bytesToFree: number;
  readonly plan: EvictionPlan;
  /** Over the mark: stop once the cgroup's usage is at or under this (re-read after each move). */
  readonly stopAtUsageBytes?: number;
}

const NO_SPILL: SpillDecision = { reason: 'none', bytesToFree: 0, plan: { victims: [], freedBytes: 0, shortfallBytes: 0 } };

function memoryBytesOf(inodes: readonly InodeStat[]): number {
  let bytes = 0;
  for (const i of inodes) if (i.tier === 'memory') bytes += i.sizeBytes;
  return bytes;
}

/**
 * What to spill now. Fixed budget: the memory tier's excess over it. Cgroup: usage over the mark
 * (urgent: also files moved within the anti-thrash window); else, with both tiers in use, the
 * memory-tier bytes that leave the disk tier's working set without page cache (shmem is never
 * reclaimed, so closed memory-tier files give way to the files in use, as an overlay /tmp's page
 * cache would shift). Victims: policy.planEviction (closed before open or mapped, oldest close first).
 */
export function planSpill(snapshot: TierSnapshot, config: PolicyConfig, urgent = false): SpillDecision {
  const b = snapshot.budget;
  if (b.kind === 'fixed') {
    const excess = memoryBytesOf(snapshot.inodes) - b.bytes;
    if (excess <= 0) return NO_SPILL;
    return { reason: 'over-budget', bytesToFree: excess, plan: planEviction(snapshot, excess, config, { urgent }) };
  }
  if (b.usageBytes > b.markBytes) {
    const excess = b.usageBytes - b.markBytes;
    return { reason: 'over-mark', bytesToFree: excess, plan: planEviction(snapshot, excess, config, { urgent }), stopAtUsageBytes: b.markBytes };
  }
  if (snapshot.memoryTierBytes > 0 && snapshot.filesDisk > 0) {
    const excess = workingSetExcessBytes(snapshot, sharedBudgetBytes(b), config);
    if (excess > 0) return { reason: 'working-set', bytesToFree: excess, plan: planEviction(snapshot, excess, config, { urgent: false }) };
  }
  return NO_SPILL;
}

/**
 * Write the disk tier back first (cgroup only): cgroup v1 has no per-cgroup dirty throttling, so a
 * function writing a big disk-tier file can fill its limit with dirty page cache that reclaim
 * cannot free until written back (on a busy disk, an OOM kill). Done when dirty pages push usage
 * over the mark, or before promoting while nobody writes on disk (they would take the room).
 */
export function needsWriteback(snapshot: TierSnapshot, config: PolicyConfig): boolean {
  const b = snapshot.budget;
  if (b.kind !== 'cgroup' || b.dirtyBytes < config.writeback.floorBytes) return false;
  if (b.usageBytes + b.dirtyBytes > b.markBytes) return true;
  return !b.shrinking && b.usageBytes <= b.markBytes && snapshot.openDisk === 0;
}

export interface PromoteDecision {
  readonly roomBytes: number;
  readonly plan: PromotionPlan;
  /** When a file held back now (anti-thrash window, quiet period) may be promotable: look again then. */
  readonly recheckAtMs: number | null;
}

const NO_PROMOTION: PromoteDecision = { roomBytes: 0, plan: { promotions: [], bytes: 0 }, recheckAtMs: null };

/** The end of the anti-thrash window of the closed disk-tier files a plan did not take. */
function antiThrashEndMs(inodes: readonly InodeStat[], chosen: readonly number[], nowMs: number, config: PolicyConfig): number | null {
  const window = config.eviction.antiThrashWindowMs;
  let end: number | null = null;
  for (const i of inodes) {
    if (i.tier !== 'disk' || i.openCount > 0 || i.lastMoveMs === null || nowMs - i.lastMoveMs >= window) continue;
    if (chosen.includes(i.ino)) continue;
    end = Math.min(end ?? Infinity, i.lastMoveMs + window);
  }
  return end;
}

/** The end of the quiet period (no open or close for promoteQuietMs) that closed files wait for. */
export function quietPeriodEndMs(snapshot: Pick<TierSnapshot, 'inodes'>, config: PolicyConfig): number {
  let last = -Infinity;
  for (const i of snapshot.inodes) last = Math.max(last, i.lastOpenMs ?? -Infinity, i.lastCloseMs ?? -Infinity);
  return last + config.eviction.promoteQuietMs;
}

/**
 * What to promote now (only closed files move). Fixed budget: closed disk-tier files into the room
 * under it, most recently closed first, no quiet period (that guards a cgroup against dirty page
 * cache beside a promoted copy; a budget without one has no such edge). Cgroup: into the room under
 * the mark less dirty page cache (none while a disk-tier file is open with dirty pages about: a
 * writer is likely still going, and its next pages must fit beside the promoted, unreclaimable
 * copy: CI saw the 2×60+160 MiB writer OOM-killed that way), never during a shrink, beside the
 * disk tier's working set, once the store was quiet for promoteQuietMs.
 */
export function planPromote(snapshot: TierSnapshot, config: PolicyConfig): PromoteDecision {
  const b = snapshot.budget;
  const closedConfig = (quietMs: number): PolicyConfig => ({
    ...config,
    eviction: { ...config.eviction, promoteClosed: true, promoteQuietMs: quietMs },
  });
  if (b.kind === 'fixed') {
    if (!b.promote) return NO_PROMOTION;
    const room = b.bytes - memoryBytesOf(snapshot.inodes);
    if (room <= 0) return NO_PROMOTION;
    const closedOnDisk = snapshot.inodes.filter((i) => i.tier === 'disk' && i.openCount === 0);
    const plan = planPromotion({ nowMs: snapshot.nowMs, inodes: closedOnDisk }, room, closedConfig(0));
    return { roomBytes: room, plan, recheckAtMs: antiThrashEndMs(closedOnDisk, plan.promotions, snapshot.nowMs, config) };
  }
  if (b.usageBytes > b.markBytes || b.shrinking) return NO_PROMOTION;
  const floor = config.writeback.floorBytes;
  const writing = snapshot.openDisk > 0;
  const room = b.dirtyBytes > floor && writing ? 0 : b.markBytes - b.usageBytes - b.dirtyBytes;
  // The counters answer "anything closed on disk?" before the inode table is walked.
  if (!Number.isFinite(room) || room <= 0 || snapshot.filesDisk <= snapshot.openDisk) return NO_PROMOTION;
  const cfg = closedConfig(config.eviction.promoteQuietMs);
  const plan = planPromotion(snapshot, room, cfg, { sharedBudgetBytes: sharedBudgetBytes(b) });
  const quietEnd = quietPeriodEndMs(snapshot, cfg);
  const recheck = [antiThrashEndMs(snapshot.inodes, plan.promotions, snapshot.nowMs, config), quietEnd > snapshot.nowMs ? quietEnd : null]
    .filter((t): t is number => t !== null);
  return { roomBytes: room, plan, recheckAtMs: recheck.length > 0 ? Math.min(...recheck) : null };
}

/**
 * Whether the manager may lower the limit to `targetLimitBytes` now: usage under the new mark, or
 * at least under the new limit (cgroup v1 refuses a limit below usage).
 */
export function shrinkReady(usageBytes: number, targetLimitBytes: number, headroom: PolicyConfig['headroom']): boolean {
  const keep = Math.max(headroom.minBytes, Math.ceil(headroom.fraction * targetLimitBytes));
  return usageBytes <= targetLimitBytes - keep || usageBytes < targetLimitBytes;
}
