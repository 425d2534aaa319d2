/** The node agent: registers a node's N_lim with the controller and runs the invocations placed on it. */
export { NodeAgent, type NodeAgentOptions } from './agent';
export { ExecutionError, type TaskExecutor } from './executor';
export { defaultNodeLimitBytes, memTotalBytes, DEFAULT_FUNCTION_MEMORY_FRACTION } from './memory';
