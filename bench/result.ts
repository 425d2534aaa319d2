/** One measured figure set of a suite, as written to the JSON document. */
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
