/** Stable codes for what the volume driver refuses; Docker shows the message, tests assert on the code. */
export type VolumeErrorCode =
  | 'E_BAD_REQUEST'
  | 'E_BAD_OPTION'
  | 'E_NO_VOLUME'
  | 'E_IN_USE'
  | 'E_TOKEN'
  | 'E_WRONG_TENANT'
  | 'E_DAEMON'
  | 'E_SOCKET';

export class VolumeError extends Error {
  constructor(
    readonly code: VolumeErrorCode,
    message: string,
    cause?: unknown,
  ) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'VolumeError';
  }
}

export function isVolumeError(e: unknown, code?: VolumeErrorCode): e is VolumeError {
  return e instanceof VolumeError && (code === undefined || e.code === code);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
