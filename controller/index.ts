/** The cluster controller: node states for all tenants, deploy/profile/invoke API, Kubernetes extender. */
export { Controller, OPERATOR_TOKEN_NAME, EXTENDER_TOKEN_NAME, type ControllerOptions, type TaskRecord } from './server';
export { TenantCredentials } from './auth';
export { ControllerClient, resolveToken } from './client';
export { ClusterState } from './state';
export { FunctionStore } from './store';
export { ControllerError, isControllerError, type ControllerErrorCode } from './errors';
export { ExtenderArgsSchema, extenderFilter, extenderPrioritize, parseQuantity, PROFILE_MEM_ANNOTATION } from './extender';
export {
  registerControllerCommands,
  AGENT_TOKEN_NAME,
  DEFAULT_CONTROLLER_STATE,
  formatMiB,
  httpUrl,
  positiveInt,
  waitForSignal,
} from './commands';
