import { scaled, type PolicyConfig } from './config';
import type { PlacementRequest, Tier } from './snapshots';

export interface PlacementDecision {
  readonly tier: Tier;
  readonly reason: 'fits-in-budget' | 'exceeds-budget' | 'no-size-hint';
}

/**
 * Chooses the tier for a new file. A file goes to memory only when its hint times the safety factor
 * fits in what the budget has left: a file placed in memory that then outgrows it cannot be moved
 * while open (cgroup v1 fails the write with ENOMEM), so the check is made up front.
 */
export function decidePlacement(request: PlacementRequest, config: PolicyConfig): PlacementDecision {
  if (request.sizeHintBytes === null) {
    return { tier: config.placement.unknownSizeTier, reason: 'no-size-hint' };
  }
  const left = request.budgetBytes - request.memoryTierBytes;
  return scaled(request.sizeHintBytes, config) <= left
    ? { tier: 'memory', reason: 'fits-in-budget' }
    : { tier: 'disk', reason: 'exceeds-budget' };
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
