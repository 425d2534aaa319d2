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
    const mix = results.find((r) => r.target === 'ephemera')!;
    expect(mix.oomKills).toBe(0);
    expect(mix.figures.loaned_mb_peak).toBeGreaterThan(100);
  }, 150_000);
});
