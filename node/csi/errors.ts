import { status } from '@grpc/grpc-js';

/**
 * A refusal the CO sees as a gRPC status: the code is the one the CSI spec names for the case,
 * the message says which field was wrong and why (kubelet shows it in the pod's events). Not an
 * EphemeraError: its `code` is the numeric gRPC status the wire carries, not one of our E_ codes.
 */
export class CsiError extends Error {
  constructor(
    readonly code: status,
    message: string,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'CsiError';
  }
}

export const invalid = (message: string) => new CsiError(status.INVALID_ARGUMENT, message);

export { errorMessage } from '../../errors/index';
