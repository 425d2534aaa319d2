import { scaled, type PolicyConfig } from './config';
import type { InodeStat, PlacementRequest, StoreSnapshot, Tier } from './snapshots';

export interface PlacementDecision {
  readonly tier: Tier;
  readonly reason: 'fits-in-budget' | 'exceeds-budget' | 'no-size-hint';
}

/**
 * Chooses the tier for a new file. A file goes to memory only when its hint times the safety factor
 * fits in what the budget has left beside the disk tier's working set: a file placed in memory that
 * then outgrows it cannot be moved while open (cgroup v1 fails the write with ENOMEM), so the check
 * is made up front; and memory-tier pages are never reclaimed, so taking the page cache the files in
 * use on disk need would make them thrash (the hint must help, never hurt).
 */
export function decidePlacement(request: PlacementRequest, config: PolicyConfig): PlacementDecision {
  if (request.sizeHintBytes === null) {
    return { tier: config.placement.unknownSizeTier, reason: 'no-size-hint' };
  }
  const left = request.budgetBytes - request.memoryTierBytes - (request.diskWorkingSetBytes ?? 0);
  return scaled(request.sizeHintBytes, config) <= left
    ? { tier: 'memory', reason: 'fits-in-budget' }
    : { tier: 'disk', reason: 'exceeds-budget' };
}

/** A disk-tier inode in use: open now, or opened or closed within the working-set window. */
export function inDiskWorkingSet(inode: InodeStat, nowMs: number, config: PolicyConfig): boolean {
  if (inode.tier !== 'disk') return false;
  if (inode.openCount > 0) return true;
  const window = config.placement.workingSetWindowMs;
  const last = Math.max(inode.lastOpenMs ?? -Infinity, inode.lastCloseMs ?? -Infinity);
  return nowMs - last < window;
}

/**
 * Page cache the disk tier's working set needs to be served from memory: the bytes of the disk-tier
 * inodes in use (inDiskWorkingSet), leaving out `exceptIno` (a promotion candidate, which would
 * bring its own bytes into the memory tier instead).
 */
export function diskWorkingSetBytes(snapshot: Pick<StoreSnapshot, 'nowMs' | 'inodes'>, config: PolicyConfig, exceptIno?: number): number {
  let bytes = 0;
  for (const i of snapshot.inodes) {
    if (i.ino !== exceptIno && inDiskWorkingSet(i, snapshot.nowMs, config)) bytes += i.sizeBytes;
  }
  return bytes;
}

/**
 * Memory-tier bytes to give back so the memory tier and the disk tier's working set fit the budget
 * together (0 when they do). What the working set needs beyond the whole budget is not asked for:
 * the memory tier can give only what it holds, and page cache that large thrashes anyway.
 */
export function workingSetExcessBytes(snapshot: Pick<StoreSnapshot, 'nowMs' | 'inodes'>, budgetBytes: number, config: PolicyConfig): number {
  let memory = 0;
  for (const i of snapshot.inodes) if (i.tier === 'memory') memory += i.sizeBytes;
  if (memory === 0) return 0;
  const need = Math.min(diskWorkingSetBytes(snapshot, config), Math.max(0, budgetBytes));
  return Math.max(0, memory + need - budgetBytes);
}

/**
 * The size quota every container's `/tmp` gets under `ephemera node` when the operator sets none:
 * Docker's `--tmpfs` default (half of RAM), but never more than a quarter of what the disk tier's
 * file system has free when the node starts, so one container cannot fill the node's `/var/lib`.
 * Rounded down to a MiB, at least 64 MiB.
 */
export function defaultTmpSizeBytes(node: { ramBytes: number; diskFreeBytes: number }): number {
  const MiB = 1 << 20;
  const bytes = Math.min(node.ramBytes / 2, node.diskFreeBytes / 4);
  return Math.max(64 * MiB, Math.floor(bytes / MiB) * MiB);
}
