import { scaled, type PolicyConfig } from './config';
import type { ContainerState } from './snapshots';

export type Pool = 'harvest' | 'allocation' | 'self-sufficient';

/** U' + F': profiled demand with the safety factor, bytes. */
export function scaledDemand(container: ContainerState, config: PolicyConfig): number {
  if (container.profile === null) return 0;
  return scaled(container.profile.peakMemoryBytes, config) + scaled(container.profile.largestFileBytes, config);
}

/** Spare = M_now − U' − F' (may be negative). */
export function spareBytes(container: ContainerState, config: PolicyConfig): number {
  return container.limitBytes - scaledDemand(container, config);
}

/** Need = U' + F' − M_now (may be negative). */
export function needBytes(container: ContainerState, config: PolicyConfig): number {
  return -spareBytes(container, config);
}

/**
 * Thesis 3.3.2 / 4.3: harvest when demand < 0.9 · M_init, allocation when demand > M_init, else
 * self-sufficient. Demand is U' + F' or U + F per `pools.poolCompare`. Unprofiled containers, sharing
 * switched off, and a container in its safeguard cool-down (which would otherwise harvest) are
 * self-sufficient.
 */
export function classifyContainer(container: ContainerState, nowMs: number, config: PolicyConfig): Pool {
  if (!config.pools.sharing || container.profile === null) return 'self-sufficient';
  const demand =
    config.pools.poolCompare === 'scaled'
      ? scaledDemand(container, config)
      : container.profile.peakMemoryBytes + container.profile.largestFileBytes;
  const initial = container.initialLimitBytes;
  if (demand > initial) return 'allocation';
  if (demand < config.pools.harvestThreshold * initial) {
    const cooling = container.nonHarvestableUntilMs != null && nowMs < container.nonHarvestableUntilMs;
    return cooling ? 'self-sufficient' : 'harvest';
  }
  return 'self-sufficient';
}

/** Containers may lend to each other only when their scope keys are equal; every key includes the tenant. */
export function poolScopeKey(container: ContainerState, config: PolicyConfig): string {
  switch (config.pools.scope) {
    case 'tenant':
      return JSON.stringify([container.tenant]);
    case 'function':
      return JSON.stringify([container.tenant, 'function', container.function]);
    case 'workflow':
      return JSON.stringify([container.tenant, 'workflow', container.workflow]);
  }
}
