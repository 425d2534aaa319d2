import { EphemeraError } from '../errors/index';
import type { EngineErrorCode } from '../engine/index';
import type { FunctionRef, InvocationOutcome, ProfileFigures, RunningTask } from '../link/index';

/**
 * How a node agent runs what the controller places on it. The Docker one runs every invocation in its
 * own container whose memory limit is the task's T_lim (one task = one container, as the thesis'
 * placement assumes); the tenant manager will later take this role and add lending.
 */
export interface TaskExecutor {
  run(task: RunningTask, fn: FunctionRef, args: string[], options: { timeoutMs: number }): Promise<InvocationOutcome>;
  profile(fn: FunctionRef, inputs: string[][], options: { timeoutMs: number }): Promise<ProfileFigures>;
  /** Removes what an earlier process of this node left running (its tasks died with it). */
  recover(): Promise<number>;
  /** Stops every running task and releases what it holds. */
  close(): Promise<void>;
}

/** The agent's own codes; an engine failure keeps the engine's code (E_TIMEOUT, E_NO_IMAGE …). */
export const EXECUTION_ERROR_CODES = ['E_EXECUTION', 'E_CLOSED', 'E_BAD_ARGS'] as const;
export type ExecutionErrorCode = (typeof EXECUTION_ERROR_CODES)[number] | EngineErrorCode;

export class ExecutionError extends EphemeraError<ExecutionErrorCode> {
  constructor(code: ExecutionErrorCode, message: string, cause?: unknown) {
    super(code, message, { cause });
  }
}
