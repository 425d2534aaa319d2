import { EphemeraError, errorCode, errorMessage } from '../../errors/index';
import { isFusefsError } from '../errors';
import type { ControlErrorCode, ErrorReply } from './messages';

/** Errors of the daemon and its control API; `code` is stable (tests and the manager match on it). */
export class DaemonError extends EphemeraError<ControlErrorCode> {
  constructor(code: ControlErrorCode, message: string) {
    super(code, message);
  }
}

/** Any error → the control API's error reply; unexpected ones are E_DAEMON with their message. */
export function errorReply(e: unknown, seq?: number | string): ErrorReply {
  const base = seq === undefined ? {} : { seq };
  if (e instanceof DaemonError || isFusefsError(e)) return { ok: false, ...base, code: e.code, message: e.message };
  return { ok: false, ...base, code: errorCode(e) ?? 'E_DAEMON', message: errorMessage(e) };
}
