import { describe, expect, it } from 'vitest';
import { mixSuite } from '../../bench/suites/mix';
import { ensureDocker } from '../support/docker';

const docker = await ensureDocker();

describe.skipIf(docker.skipReason !== undefined)('bench mix suite (quick, sharing only)', () => {
  it('measures decision latency and one mix run with lending and no OOM', async () => {
    const lines: string[] = [];
    const results = await mixSuite.run({ quick: true, passes: 1, targets: ['ephemera'], timeCapS: 120, log: (l) => lines.push(l) });
    console.log(lines.join('\n'));
    const latency = results.filter((r) => r.workload === 'decision-latency');
    expect(latency).toHaveLength(4);
    for (const r of latency) expect(r.figures.decisions).toBeGreaterThan(0);
    const mix = results.find((r) => r.target === 'ephemera' && r.workload === 'cpu+io')!;
    expect(mix.oomKills).toBe(0);
    expect(mix.figures.loaned_mb_peak).toBeGreaterThan(100);
    // Loaned MB over time: points in time order, some while both ran, none left at the end.
    const overTime = results.filter((r) => r.target === 'ephemera' && r.workload === 'loaned-over-time');
    expect(overTime.length).toBeGreaterThanOrEqual(2);
    expect(overTime.length).toBeLessThanOrEqual(21);
    const ts = overTime.map((r) => Number(r.parameters.t_s));
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
    expect(Math.max(...overTime.map((r) => r.figures.loaned_mb!))).toBeGreaterThan(50);
  }, 150_000);
});
