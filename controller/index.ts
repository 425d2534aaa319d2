/** The cluster controller: node states for all tenants, deploy/profile/invoke API, Kubernetes extender. */
export { Controller, type ControllerOptions, type TaskRecord, type TaskStatus } from './server';
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
