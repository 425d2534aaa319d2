import { errorGuard, LayerError } from '../errors/index';

/** Stable codes for everything the manager refuses or fails at; tests and peers branch on them. */
export const MANAGER_ERROR_CODES = [
  'E_UNKNOWN_CONTAINER',
  'E_WRONG_TENANT',
  'E_DUPLICATE_CONTAINER',
  'E_BAD_INPUT',
  'E_LIMIT_WRITE',
  'E_LIMIT_MISMATCH',
  'E_UNSAFE_STEP',
  'E_EVICT_TIMEOUT',
  'E_NO_INVOKER',
  'E_FORBIDDEN',
  'E_CLOSED',
  'E_NO_MANAGER',
] as const;
export type ManagerErrorCode = (typeof MANAGER_ERROR_CODES)[number];

export class ManagerError extends LayerError<ManagerErrorCode> {}

export const isManagerError = errorGuard(ManagerError);
