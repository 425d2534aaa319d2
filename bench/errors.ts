import type { BenchResult } from './result';

/**
 * Every error the bench layer makes. Codes are stable (tests and scripts match on them):
 * E_BAD_OPTION, E_UNKNOWN_SUITE, E_UNKNOWN_TARGET, E_TARGET_SETUP, E_TARGET_TEARDOWN, E_TIME_CAP,
 * E_INTERRUPTED, E_FIO, E_FIO_OUTPUT, E_CC, E_BENCH_IO, E_TARGETS_FAILED.
 */
export class BenchError extends Error {
  /** Results measured before the run stopped (time cap, SIGINT), so they are still written. */
  partial: BenchResult[] = [];
  exitCode: number;

  constructor(
    readonly code: string,
    message: string,
    options: { cause?: unknown; exitCode?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BenchError';
    this.exitCode = options.exitCode ?? (code === 'E_INTERRUPTED' ? 130 : 1);
  }
}

export function errorCode(err: unknown): string {
  if (err instanceof BenchError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'E_UNEXPECTED';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
