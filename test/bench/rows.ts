import type { BenchResult } from '../../bench/frame';

/** One pass of the impact suite's memory-limit sweep; `seconds` undefined is a pass that was killed. */
export function impactRow(target: string, limitMib: number, seconds: number | undefined, oomKills: number): BenchResult {
  return {
    suite: 'impact',
    target,
    workload: 'impact-memory-limit',
    parameters: { primary: 'seconds', sweep: 'limit_mib', limit_mib: limitMib },
    pass: 1,
    phase: 'cold',
    figures: seconds === undefined ? {} : { seconds },
    oomKills,
  };
}
