/** Stable codes for everything the manager refuses or fails at; tests and peers branch on them. */
export type ManagerErrorCode =
  | 'E_UNKNOWN_CONTAINER'
  | 'E_WRONG_TENANT'
  | 'E_DUPLICATE_CONTAINER'
  | 'E_BAD_INPUT'
  | 'E_LIMIT_WRITE'
  | 'E_LIMIT_MISMATCH'
  | 'E_UNSAFE_STEP'
  | 'E_EVICT_TIMEOUT'
  | 'E_NO_INVOKER'
  | 'E_FORBIDDEN'
  | 'E_CLOSED'
  | 'E_NO_MANAGER';

export class ManagerError extends Error {
  readonly code: ManagerErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ManagerErrorCode, message: string, details?: Record<string, unknown>, cause?: unknown) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'ManagerError';
    this.code = code;
    this.details = details;
  }
}

export function isManagerError(err: unknown, code?: ManagerErrorCode): err is ManagerError {
  return err instanceof ManagerError && (code === undefined || err.code === code);
}
