import { EphemeraError, errorGuard } from '../errors/index';

/**
 * Every failure the controller and the node agent report carries a stable `code`; HTTP answers put
 * it in the body (`{ code, message, issues? }`), and tests branch on it, never on the message.
 */
export const CONTROLLER_ERROR_CODES = [
  /** A request body or query failed validation; `issues` lists every reason. */
  'E_BAD_REQUEST',
  /** A command-line option is malformed. */
  'E_BAD_ARGS',
  /** No credential, or one the controller does not know (revoked, mistyped). */
  'E_UNAUTHORIZED',
  /** A valid credential asked for another tenant's object, or a route its kind may not use. */
  'E_FORBIDDEN',
  /** A per-tenant limit the operator set (functions, concurrent invocations, memory) would be exceeded. */
  'E_LIMIT',
  /** No such function, task or route. */
  'E_NOT_FOUND',
  /** A function with that name is already deployed for the tenant. */
  'E_EXISTS',
  /** No registered node can fit the task (N_alloc + T_lim ≤ N_lim holds nowhere). */
  'E_NO_CAPACITY',
  /** No node agent is registered at all. */
  'E_NO_NODES',
  /** The node running the task disappeared (socket closed, heartbeat timed out, or it restarted). */
  'E_NODE_LOST',
  /** The function could not be run on the node (engine failure, timeout). */
  'E_EXECUTION',
  /** A link message failed validation or broke the protocol. */
  'E_PROTOCOL',
  /** The durable state directory holds something unreadable. */
  'E_STATE',
  /** The controller or the agent is shutting down. */
  'E_CLOSED',
  /** Anything else that failed while answering (HTTP 500); the message says what. */
  'E_INTERNAL',
] as const;
export type ControllerErrorCode = (typeof CONTROLLER_ERROR_CODES)[number];

export interface RequestIssue {
  /** Dotted path inside the request (`body.command.0`, `params.name`), `(root)` for the whole. */
  path: string;
  reason: string;
}

const HTTP_STATUS: Record<ControllerErrorCode, number> = {
  E_BAD_REQUEST: 400,
  E_BAD_ARGS: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  // 429: the request is fine and may succeed later (a running invocation ends, a function is deleted).
  E_LIMIT: 429,
  E_NOT_FOUND: 404,
  E_EXISTS: 409,
  E_NO_CAPACITY: 503,
  E_NO_NODES: 503,
  E_NODE_LOST: 502,
  E_EXECUTION: 502,
  E_PROTOCOL: 502,
  E_STATE: 500,
  E_CLOSED: 503,
  E_INTERNAL: 500,
};

export class ControllerError extends EphemeraError<ControllerErrorCode, readonly RequestIssue[]> {
  /** Read by the CLI to choose the process exit status. */
  declare readonly exitCode: 2;

  /** The request issues, as HTTP answers name them (the same list as `details`). */
  readonly issues: readonly RequestIssue[];

  constructor(code: ControllerErrorCode, message: string, issues: readonly RequestIssue[] = []) {
    super(code, message, { details: issues, exitCode: 2 });
    this.issues = issues;
  }

  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }

  toJSON(): { code: ControllerErrorCode; message: string; issues?: readonly RequestIssue[] } {
    return this.issues.length > 0 ? { code: this.code, message: this.message, issues: this.issues } : { code: this.code, message: this.message };
  }
}

export const isControllerError = errorGuard(ControllerError);

export { errorMessage } from '../errors/index';

/** Turns zod issues into request issues, prefixing where the document came from (`body`, `query`). */
export function issuesFrom(where: string, issues: readonly { path: readonly PropertyKey[]; message: string }[]): RequestIssue[] {
  return issues.map((i) => ({
    path: [where, ...i.path.map(String)].join('.'),
    reason: i.message,
  }));
}
