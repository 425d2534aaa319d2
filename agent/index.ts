/** The node agent: registers a node's N_lim with the controller and runs the invocations placed on it. */
export { NodeAgent } from './agent';
export { ExecutionError, type TaskExecutor } from './executor';
export { defaultNodeLimitBytes } from './memory';
