/** The cluster controller: node states for all tenants, deploy/profile/invoke API, Kubernetes extender. */
export { Controller, OPERATOR_TOKEN_NAME, EXTENDER_TOKEN_NAME, type ControllerOptions, type TaskRecord, type TaskStatus } from './server';
export { TenantCredentials, TenantLimitsSchema, describePrincipal, isLoopbackHost, type Principal, type TenantLimits, type TokenInfo } from './auth';
export { ControllerClient, resolveToken } from './client';
export { ClusterState, type NodeView, type NodeStatus, type RegisterOutcome } from './state';
export { FunctionStore, demandBytes, functionKey, type FunctionRecord, type ProfileRecord } from './store';
export { ControllerError, isControllerError, type ControllerErrorCode, type RequestIssue } from './errors';
export {
  ExtenderArgsSchema,
  extenderFilter,
  extenderPrioritize,
  parseQuantity,
  podTask,
  PROFILE_MEM_ANNOTATION,
  MAX_EXTENDER_PRIORITY,
  type ExtenderArgs,
  type ExtenderFilterResult,
  type HostPriority,
  type ExtenderClusterView,
} from './extender';
export * from './protocol';
export {
  registerControllerCommands,
  AGENT_TOKEN_NAME,
  DEFAULT_CONTROLLER_STATE,
  formatMiB,
  httpUrl,
  positiveInt,
  waitForSignal,
} from './commands';
