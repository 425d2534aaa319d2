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

export class ExecutionError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ExecutionError';
    this.code = code;
  }
}
