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
