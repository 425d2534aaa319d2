/** Every link failure carries a stable `code`; peers and tests branch on it, never on the message. */
export type LinkErrorCode =
  | 'E_BAD_MESSAGE'
  | 'E_UNKNOWN_MESSAGE'
  | 'E_AUTH'
  | 'E_WRONG_TENANT'
  | 'E_HELLO_TIMEOUT'
  | 'E_NOT_CONNECTED'
  | 'E_CLOSED'
  | 'E_TIMEOUT'
  | 'E_TOKEN'
  | 'E_HANDLER'
  | 'E_BAD_CONFIG';

export class LinkError extends Error {
  readonly code: LinkErrorCode;

  constructor(code: LinkErrorCode, message: string, cause?: unknown) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'LinkError';
    this.code = code;
  }
}

export function isLinkError(err: unknown, code?: LinkErrorCode): err is LinkError {
  return err instanceof LinkError && (code === undefined || err.code === code);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The stable code of any error that has one (link, engine, policy, manager), else E_HANDLER. */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E_[A-Z_]+$/.test(code) ? code : 'E_HANDLER';
}
