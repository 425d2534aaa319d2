import { errorGuard, LayerError } from '../errors/index';

/**
 * Every failure the engine reports carries a stable `code`; callers and tests branch on the code,
 * never on the message, which is for people.
 */
export const ENGINE_ERROR_CODES = [
  'E_NO_DOCKER',
  'E_NO_IMAGE',
  'E_NO_COMMAND',
  'E_TIMEOUT',
  'E_CONTAINER_DIED',
  'E_BAD_SPEC',
  'E_IMAGE_BUILD',
  'E_CGROUP',
  'E_TMP_PROVIDER',
  'E_REMOVED',
  'E_DOCKER',
] as const;
export type EngineErrorCode = (typeof ENGINE_ERROR_CODES)[number];

export class EngineError extends LayerError<EngineErrorCode> {}

export const isEngineError = errorGuard(EngineError);

/** The HTTP status dockerode attaches to Engine API failures, if any. */
export function dockerStatus(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'statusCode' in err) {
    const status = (err as { statusCode: unknown }).statusCode;
    return typeof status === 'number' ? status : undefined;
  }
  return undefined;
}

export { errorMessage } from '../errors/index';
