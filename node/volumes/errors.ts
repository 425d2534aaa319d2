import { EphemeraError, errorGuard } from '../../errors/index';

/** Stable codes for what the volume driver refuses; Docker shows the message, tests assert on the code. */
export const VOLUME_ERROR_CODES = [
  'E_BAD_REQUEST',
  'E_BAD_OPTION',
  'E_NO_VOLUME',
  'E_IN_USE',
  'E_TOKEN',
  'E_WRONG_TENANT',
  'E_DAEMON',
  'E_SOCKET',
] as const;
export type VolumeErrorCode = (typeof VOLUME_ERROR_CODES)[number];

export class VolumeError extends EphemeraError<VolumeErrorCode> {
  constructor(code: VolumeErrorCode, message: string, cause?: unknown) {
    super(code, message, { cause });
  }
}

export const isVolumeError = errorGuard(VolumeError);

export { errorMessage } from '../../errors/index';
