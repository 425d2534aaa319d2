/**
 * The one frame every benchmark suite runs in: target names, the result shape written to JSON,
 * and the suite contract. Every result is stored beside its tmpfs and overlay baselines from the
 * same run, so ratios are computed from one run, never against remembered numbers.
 */
import { BenchError } from './errors';
import type { BenchResult } from './result';

export const TARGETS = ['ephemera', 'ephemera-noshare', 'ephemera-disk', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'] as const;
export type TargetName = (typeof TARGETS)[number];

/** The targets every ratio is taken against; both run in the same run as the target measured. */
export const BASELINE_TARGETS = ['tmpfs', 'overlay'] as const;

// In its own file: BenchError carries partial results, and the frame raises BenchErrors.
export type { BenchResult } from './result';

/** One step of a suite finished (or is about to start), for the progress bar. */
export interface ProgressTick {
  done: number;
  total: number;
  /** What runs next, e.g. "pass 2 · overlay · randread-4k-cold". */
  label: string;
}

/** A target that could not be set up, measured or torn down in one pass; the run goes on without it. */
export interface TargetFailure {
  target: string;
  pass: number;
  workload?: string;
  code: string;
  message: string;
}

export interface SuiteOptions {
  quick: boolean;
  passes: number;
  targets?: string[];
  /**
   * Container suites: run only the cases matching one of these (each a set of parameter values that
   * must all match, e.g. { file_mib: '128', memory_mib: '150' }); absent or empty = every case.
   */
  cases?: Record<string, string>[];
  /** Hard cap on the suite's wall time, in seconds. */
  timeCapS: number;
  log: (line: string) => void;
  /** Aborts the run (SIGINT); the suite tears its targets down and rethrows `signal.reason`. */
  signal?: AbortSignal;
  progress?: (tick: ProgressTick) => void;
  /** Without it, a target failure aborts the run; with it, the failure is reported and the run goes on. */
  onFailure?: (failure: TargetFailure) => void;
}

export interface Suite {
  name: string;
  description: string;
  /** Default for `SuiteOptions.timeCapS` when the caller gives none. */
  defaultTimeCapS?: { quick: number; full: number };
  /** Default for `--passes` when the caller gives none (3 when absent). */
  defaultPasses?: { quick: number; full: number };
  run(opts: SuiteOptions): Promise<BenchResult[]>;
}

/**
 * The signal a suite should obey: the caller's (SIGINT) combined with the suite's own time cap, so
 * the cap holds whoever calls `run()`. Its reason is always a BenchError (E_INTERRUPTED/E_TIME_CAP).
 */
export function suiteSignal(opts: SuiteOptions, suiteName: string): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const capTimer = setTimeout(() => {
    controller.abort(new BenchError('E_TIME_CAP', `suite ${suiteName} hit its time cap of ${opts.timeCapS} s`));
  }, Math.max(0, opts.timeCapS * 1000));
  capTimer.unref();
  const onCallerAbort = (): void => {
    const reason: unknown = opts.signal?.reason;
    controller.abort(reason instanceof BenchError ? reason : new BenchError('E_INTERRUPTED', `suite ${suiteName} interrupted`));
  };
  if (opts.signal?.aborted) onCallerAbort();
  else opts.signal?.addEventListener('abort', onCallerAbort, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(capTimer);
      opts.signal?.removeEventListener('abort', onCallerAbort);
    },
  };
}

export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}
