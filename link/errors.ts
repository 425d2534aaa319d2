import { EphemeraError, errorCode as codeOf, type ErrorCode, errorGuard } from '../errors/index';

export { errorMessage } from '../errors/index';

/** Every link failure carries a stable `code`; peers and tests branch on it, never on the message. */
export const LINK_ERROR_CODES = [
  'E_BAD_MESSAGE',
  'E_UNKNOWN_MESSAGE',
  'E_AUTH',
  'E_WRONG_TENANT',
  'E_HELLO_TIMEOUT',
  'E_NOT_CONNECTED',
  'E_CLOSED',
  'E_TIMEOUT',
  'E_TOKEN',
  'E_HANDLER',
  'E_BAD_CONFIG',
] as const;
export type LinkErrorCode = (typeof LINK_ERROR_CODES)[number];

export class LinkError extends EphemeraError<LinkErrorCode> {
  constructor(code: LinkErrorCode, message: string, cause?: unknown) {
    super(code, message, { cause });
  }
}

export const isLinkError = errorGuard(LinkError);

/** The stable code of any error that has one (link, engine, policy, manager), else E_HANDLER. */
export function errorCode(err: unknown): ErrorCode {
  return codeOf(err) ?? 'E_HANDLER';
}
