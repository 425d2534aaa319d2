import { EphemeraError, isCode } from '../errors/index';
import type { BenchResult } from './result';

/** The bench layer's own codes; tests and scripts match on them. */
export const BENCH_ERROR_CODES = [
  'E_BAD_OPTION',
  'E_BAD_JSON',
  'E_UNKNOWN_SUITE',
  'E_UNKNOWN_TARGET',
  'E_TARGET_SETUP',
  'E_TARGET_TEARDOWN',
  'E_TIME_CAP',
  'E_TIMEOUT',
  'E_INTERRUPTED',
  'E_FIO',
  'E_FIO_OUTPUT',
  'E_CC',
  'E_BENCH_IO',
  'E_WORKLOAD',
  'E_WORKLOAD_OUTPUT',
  'E_TARGETS_FAILED',
] as const;
export type BenchErrorCode = (typeof BENCH_ERROR_CODES)[number];

/**
 * Every error the bench layer makes. Its code is one of BENCH_ERROR_CODES, or, when it wraps the
 * failure of a target or a lower layer, that failure's code verbatim (an errno name included): a
 * run's results record what failed, not a bench-level summary of it. `isBenchCode` narrows.
 */
export class BenchError extends EphemeraError<string> {
  /** Results measured before the run stopped (time cap, SIGINT), so they are still written. */
  partial: BenchResult[] = [];
  declare readonly exitCode: number;

  constructor(code: BenchErrorCode | (string & {}), message: string, options: { cause?: unknown; exitCode?: number } = {}) {
    super(code, message, { cause: options.cause, exitCode: options.exitCode ?? (code === 'E_INTERRUPTED' ? 130 : 1) });
  }
}

export function isBenchCode(code: unknown): code is BenchErrorCode {
  return isCode(BENCH_ERROR_CODES, code);
}

/** The code a failure is recorded with: any error's own code (errno names too), else E_UNEXPECTED. */
export function errorCode(err: unknown): string {
  if (err instanceof BenchError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'E_UNEXPECTED';
}

export { errorMessage } from '../errors/index';
