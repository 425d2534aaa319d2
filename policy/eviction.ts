import { headroomBytes, type PolicyConfig } from './config';
import { inDiskWorkingSet } from './placement';
import type { InodeStat, StoreSnapshot } from './snapshots';

export interface EvictionPlan {
  /** Inodes to move to disk, in this order. */
  readonly victims: readonly number[];
  readonly freedBytes: number;
  /** What could not be freed (everything movable is already chosen); 0 when the target was met. */
  readonly shortfallBytes: number;
}

export interface EvictionOptions {
  /**
   * Also take inodes moved within the anti-thrash window, after every other candidate of the same
   * class. For an imminent OOM, where thrashing is the lesser harm.
   */
  readonly urgent?: boolean;
}

function movedRecently(inode: InodeStat, nowMs: number, config: PolicyConfig): boolean {
  return inode.lastMoveMs !== null && nowMs - inode.lastMoveMs < config.eviction.antiThrashWindowMs;
}

/** null sorts as the oldest time: an inode never closed/opened has no recency to protect. */
function byTimeThenIno(time: (i: InodeStat) => number | null) {
  return (a: InodeStat, b: InodeStat): number =>
    (time(a) ?? -Infinity) - (time(b) ?? -Infinity) || a.ino - b.ino;
}

/**
 * Chooses memory-tier inodes to move to disk until `bytesToFree` are freed: closed inodes before
 * open ones (an open file may be mid-write), oldest close first, and never an inode moved within the
 * anti-thrash window unless `urgent`. The order is greedy, so it may free a little more than asked.
 */
export function planEviction(
  snapshot: Pick<StoreSnapshot, 'nowMs' | 'inodes'>,
  bytesToFree: number,
  config: PolicyConfig,
  options: EvictionOptions = {},
): EvictionPlan {
  const inMemory = snapshot.inodes.filter((i) => i.tier === 'memory' && i.sizeBytes > 0);
  const recent = (i: InodeStat) => movedRecently(i, snapshot.nowMs, config);
  // A closed file still mapped by a process cannot move (its writes would be stranded): it goes
  // with the open ones, after every closed file that can.
  const busy = (i: InodeStat) => i.openCount > 0 || i.mapped === true;
  const closed = inMemory.filter((i) => !busy(i)).sort(byTimeThenIno((i) => i.lastCloseMs));
  const open = inMemory.filter(busy).sort(byTimeThenIno((i) => i.lastOpenMs));
  const order = [
    ...closed.filter((i) => !recent(i)),
    ...(options.urgent ? closed.filter(recent) : []),
    ...open.filter((i) => !recent(i)),
    ...(options.urgent ? open.filter(recent) : []),
  ];
  const victims: number[] = [];
  let freedBytes = 0;
  for (const inode of order) {
    if (freedBytes >= bytesToFree) break;
    victims.push(inode.ino);
    freedBytes += inode.sizeBytes;
  }
  return { victims, freedBytes, shortfallBytes: Math.max(0, bytesToFree - freedBytes) };
}

export interface PromotionPlan {
  /** Inodes to bring back to memory, in this order; their sizes sum to at most the room given. */
  readonly promotions: readonly number[];
  readonly bytes: number;
}

export interface PromotionOptions {
  /**
   * The budget the memory tier shares with the disk tier's page cache (a container's cgroup): an
   * inode is promoted only if the memory tier, it, and the working set left on disk
   * (placement.diskWorkingSetBytes) still fit in it. Absent: only `roomBytes` counts.
   */
  readonly sharedBudgetBytes?: number;
}

/**
 * Chooses disk-tier inodes to bring back into `roomBytes` of memory: open inodes first, most
 * recently opened first (the ones being used now); closed ones only if configured, most recently
 * closed first, and only once the store has been quiet (no open or close) for `promoteQuietMs`.
 * First-fit: an inode larger than what is left is skipped, a smaller later one may fit.
 */
export function planPromotion(
  snapshot: Pick<StoreSnapshot, 'nowMs' | 'inodes'>,
  roomBytes: number,
  config: PolicyConfig,
  options: PromotionOptions = {},
): PromotionPlan {
  const onDisk = snapshot.inodes.filter(
    (i) => i.tier === 'disk' && !movedRecently(i, snapshot.nowMs, config),
  );
  const newestFirst = (time: (i: InodeStat) => number | null) => (a: InodeStat, b: InodeStat) =>
    (time(b) ?? -Infinity) - (time(a) ?? -Infinity) || a.ino - b.ino;
  const quietSince = snapshot.nowMs - config.eviction.promoteQuietMs;
  const quiet = snapshot.inodes.every((i) => (i.lastOpenMs ?? -Infinity) <= quietSince && (i.lastCloseMs ?? -Infinity) <= quietSince);
  const order = [
    ...onDisk.filter((i) => i.openCount > 0).sort(newestFirst((i) => i.lastOpenMs)),
    ...(config.eviction.promoteClosed && quiet
      ? onDisk.filter((i) => i.openCount === 0).sort(newestFirst((i) => i.lastCloseMs))
      : []),
  ];
  const shared = options.sharedBudgetBytes;
  let memory = 0;
  let workingSet = 0;
  for (const i of snapshot.inodes) {
    if (i.tier === 'memory') memory += i.sizeBytes;
    else if (inDiskWorkingSet(i, snapshot.nowMs, config)) workingSet += i.sizeBytes;
  }
  const promotions: number[] = [];
  let bytes = 0;
  for (const inode of order) {
    if (bytes + inode.sizeBytes > roomBytes) continue;
    const own = inDiskWorkingSet(inode, snapshot.nowMs, config) ? inode.sizeBytes : 0;
    // Moved to memory, an inode stops needing page cache; the rest of the working set still does.
    if (shared !== undefined && memory + bytes + inode.sizeBytes + (workingSet - own) > shared) continue;
    promotions.push(inode.ino);
    bytes += inode.sizeBytes;
    workingSet -= own;
  }
  return { promotions, bytes };
}

export type AdaptDecision =
  | { readonly action: 'evict'; readonly bytesToFree: number; readonly plan: EvictionPlan }
  | { readonly action: 'promote'; readonly roomBytes: number; readonly plan: PromotionPlan }
  | { readonly action: 'none' };

/**
 * The memory adapter's step: keep usage ≤ limit − headroom. Over it → evict the excess; under it →
 * promote into the room, which by construction cannot push usage back over (no ping-pong).
 */
export function adaptStore(snapshot: StoreSnapshot, config: PolicyConfig, options: EvictionOptions = {}): AdaptDecision {
  const target = snapshot.limitBytes - headroomBytes(snapshot.limitBytes, config);
  const excess = snapshot.usageBytes - target;
  if (excess > 0) {
    return { action: 'evict', bytesToFree: excess, plan: planEviction(snapshot, excess, config, options) };
  }
  const room = -excess;
  const plan = planPromotion(snapshot, room, config);
  return plan.promotions.length > 0 ? { action: 'promote', roomBytes: room, plan } : { action: 'none' };
}
