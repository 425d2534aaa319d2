/** The tenant manager: pools, lending plans run against Docker, the safeguard, and the store link. */
export { TenantManager } from './manager';
export { ManagerError, isManagerError, type ManagerErrorCode } from './errors';
export { DockerLimitWriter, InMemoryLimitWriter, type LimitWriter } from './limits';
export { managerLabels } from './labels';
export { fetchManagerStatus } from './status-client';
export { registerManagerCommands } from './commands';
