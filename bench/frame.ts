/**
 * The one frame every benchmark suite runs in: target names, the result shape written to JSON,
 * and the suite contract. Every result is stored beside its tmpfs and overlay baselines from the
 * same run, so ratios are computed from one run, never against remembered numbers.
 */
export const TARGETS = ['ephemera', 'ephemera-noshare', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'] as const;
export type TargetName = (typeof TARGETS)[number];

export interface BenchResult {
  suite: string;
  /** A target name, or for suites without targets (policy) the variant measured. */
  target: string;
  workload: string;
  parameters: Record<string, string | number | boolean>;
  pass: number;
  phase: 'cold' | 'warm' | 'n/a';
  /** Measured figures: iops, bw_mibs, lat_us, files_per_s, seconds, decisions_per_s, … */
  figures: Record<string, number>;
  /** Counted from the cgroup's memory.oom_control oom_kill, never hidden; null where no cgroup applies. */
  oomKills: number | null;
}

export interface SuiteOptions {
  quick: boolean;
  passes: number;
  targets?: string[];
  /** Hard cap on the suite's wall time, in seconds. */
  timeCapS: number;
  log: (line: string) => void;
}

export interface Suite {
  name: string;
  description: string;
  run(opts: SuiteOptions): Promise<BenchResult[]>;
}
