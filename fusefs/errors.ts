import { EphemeraError, errorGuard } from '../errors/index';

/**
 * Every error the runtime daemon raises, each with a stable `code` that tests and callers match
 * on (piscina's pattern). Messages name the path or option at fault.
 */
export const FUSEFS_ERROR_CODES = [
  'E_NO_FUSE',
  'E_NO_MOUNTPOINT',
  'E_NOT_DIRECTORY',
  'E_MOUNTPOINT_BUSY',
  'E_MOUNT',
  // mode passthrough asked for, and the kernel (or this process's capabilities) refuses it.
  'E_PASSTHROUGH_REFUSED',
  'E_NOT_ROOT',
  'E_NOT_BUILT',
  'E_BAD_OPTION',
  'E_BAD_MESSAGE',
  'E_UNKNOWN_MOUNT',
  'E_EXISTS',
  'E_DAEMON',
  // Restartable mounts: a takeover that failed, a state version this build cannot read, the holder.
  'E_TAKEOVER',
  'E_STATE_VERSION',
  'E_HOLDER',
  'E_HOLDER_BUSY',
  // An upgrade's hand-over (SIGUSR1) that cannot be done: not restartable, io_uring, a stuck thread.
  'E_HANDOVER',
] as const;
export type FusefsErrorCode = (typeof FUSEFS_ERROR_CODES)[number];

export class FusefsError extends EphemeraError<FusefsErrorCode> {
  declare readonly exitCode: number;

  constructor(code: FusefsErrorCode, message: string, exitCode = 1) {
    super(code, message, { exitCode });
  }
}

export const isFusefsError = errorGuard(FusefsError);
