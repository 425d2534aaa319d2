/** The tenant manager: pools, lending plans run against Docker, the safeguard, and the store link. */
export { TenantManager } from './manager';
export type { ContainerInit, Invoker, TenantManagerOptions, AlarmOutcome, PlanOutcome } from './manager';
export { ManagerError, isManagerError, type ManagerErrorCode } from './errors';
export { DockerLimitWriter, InMemoryLimitWriter, type LimitWriter } from './limits';
export { managerLabels, parseManagerLabels, LABEL_INITIAL_LIMIT, LABEL_PROFILE_PEAK, LABEL_PROFILE_FILE } from './labels';
export { ManagerMetrics } from './metrics';
export { fetchManagerMetrics, fetchManagerStatus, listManagerTenants } from './status-client';
export { registerManagerCommands } from './commands';
