import { isEphemeraError } from '../errors';
import type { ControlErrorCode, ErrorReply } from './messages';

/** Errors of the daemon and its control API; `code` is stable (tests and the manager match on it). */
export class DaemonError extends Error {
  constructor(
    readonly code: ControlErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DaemonError';
  }
}

/** Any error → the control API's error reply; unexpected ones are E_DAEMON with their message. */
export function errorReply(e: unknown, seq?: number | string): ErrorReply {
  const base = seq === undefined ? {} : { seq };
  if (e instanceof DaemonError || isEphemeraError(e)) return { ok: false, ...base, code: e.code, message: e.message };
  const code = (e as { code?: unknown })?.code;
  return {
    ok: false,
    ...base,
    code: typeof code === 'string' && code.startsWith('E_') ? code : 'E_DAEMON',
    message: (e as Error)?.message ?? String(e),
  };
}
