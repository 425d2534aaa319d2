/** The tenant manager: pools, lending plans run against Docker, the safeguard, and the store link. */
export { TenantManager, type Invoker, type TenantManagerOptions } from './manager';
export { ManagerError, isManagerError, type ManagerErrorCode } from './errors';
export { DockerLimitWriter, InMemoryLimitWriter, type LimitWriter } from './limits';
export { managerLabels, parseManagerLabels, LABEL_INITIAL_LIMIT, LABEL_PROFILE_PEAK, LABEL_PROFILE_FILE } from './labels';
export { fetchManagerStatus, fetchManagerMetrics, listManagerTenants } from './status-client';
export { registerManagerCommands } from './commands';
