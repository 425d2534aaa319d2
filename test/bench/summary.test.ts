import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { z } from 'zod';
import type { BenchResult } from '../../bench/frame';
import {
  median,
  ratio,
  renderDaemonLines,
  renderTable,
  summarize,
  toJsonDocument,
  type RunInfo,
} from '../../bench/summary';

function row(target: string, workload: string, pass: number, figures: Record<string, number>, phase: BenchResult['phase'] = 'n/a'): BenchResult {
  return { suite: 'fio', target, workload, parameters: { bs: '4k' }, pass, phase, figures, oomKills: null };
}

// Three passes, interleaved as the suite produces them; medians are 200k / 100k / 400k IOPS.
const RESULTS: BenchResult[] = [
  row('tmpfs', 'randwrite-4k', 1, { iops: 190_000, lat_us: 5 }),
  row('overlay', 'randwrite-4k', 1, { iops: 90_000, lat_us: 11 }),
  row('ephemera', 'randwrite-4k', 1, { iops: 400_000, lat_us: 2.5 }),
  row('tmpfs', 'randwrite-4k', 2, { iops: 210_000, lat_us: 4 }),
  row('overlay', 'randwrite-4k', 2, { iops: 100_000, lat_us: 10 }),
  row('ephemera', 'randwrite-4k', 2, { iops: 380_000, lat_us: 2.6 }),
  row('tmpfs', 'randwrite-4k', 3, { iops: 200_000, lat_us: 4.5 }),
  row('overlay', 'randwrite-4k', 3, { iops: 120_000, lat_us: 9 }),
  row('ephemera', 'randwrite-4k', 3, { iops: 420_000, lat_us: 2.4 }),
  row('tmpfs', 'small-files', 1, { files_per_s: 60_000 }),
  row('ephemera', 'small-files', 1, { files_per_s: 6_000 }),
  row('ephemera', 'daemon-rss-idle', 1, { rss_mib: 40 }),
  row('ephemera', 'daemon-counters', 1, { READ: 0, WRITE: 0, LOOKUP: 12 }),
];

const RUN: RunInfo = {
  suite: 'fio',
  quick: true,
  passes: 3,
  targets: ['tmpfs', 'overlay', 'ephemera'],
  startedAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:01:00.000Z',
  host: { kernel: '6.18', cpus: 2, memoryMiB: 24_000 },
};

describe('median', () => {
  it('takes the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(() => median([])).toThrow(RangeError);
  });

  it('lies between min and max and ignores order', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ noNaN: true, min: -1e9, max: 1e9 }), { minLength: 1, maxLength: 15 }), (values) => {
        const m = median(values);
        expect(m).toBeGreaterThanOrEqual(Math.min(...values));
        expect(m).toBeLessThanOrEqual(Math.max(...values));
        expect(median([...values].reverse())).toBe(m);
      }),
      { seed: 4242, numRuns: 300 },
    );
  });
});

describe('ratio', () => {
  it('is > 1 when the target does better, for both orientations of figure', () => {
    expect(ratio('iops', 300, 100)).toBe(3);
    expect(ratio('lat_us', 2, 10)).toBe(5);
    expect(ratio('seconds', 20, 10)).toBe(0.5);
    // Every time figure is oriented the same way (the mix suite's io_s once read 1.09× for a slower run).
    expect(ratio('io_s', 1.97, 1.8)).toBeCloseTo(0.914, 3);
    expect(ratio('decision_us', 4, 8)).toBe(2);
    expect(ratio('files_per_s', 200, 100)).toBe(2);
    expect(ratio('bw_mibs', 50, 100)).toBe(0.5);
    expect(ratio('iops', 0, 100)).toBeNull();
    expect(ratio('iops', 100, Number.NaN)).toBeNull();
  });
});

describe('summarize', () => {
  const rows = summarize(RESULTS);
  const find = (target: string, workload: string) => rows.find((r) => r.target === target && r.workload === workload)!;

  it('takes the median of every figure over passes', () => {
    expect(find('tmpfs', 'randwrite-4k').medians).toEqual({ iops: 200_000, lat_us: 4.5 });
    expect(find('overlay', 'randwrite-4k').medians).toEqual({ iops: 100_000, lat_us: 10 });
    expect(find('ephemera', 'randwrite-4k').medians).toEqual({ iops: 400_000, lat_us: 2.5 });
    expect(find('ephemera', 'randwrite-4k').passes).toBe(3);
  });

  it('takes ratios on the primary figure against tmpfs and overlay of the same workload', () => {
    const eph = find('ephemera', 'randwrite-4k');
    expect(eph.primary).toBe('iops');
    expect(eph.vsTmpfs).toBeCloseTo(2, 12);
    expect(eph.vsOverlay).toBeCloseTo(4, 12);
    expect(find('tmpfs', 'randwrite-4k').vsTmpfs).toBe(1);
    expect(find('ephemera', 'small-files').vsTmpfs).toBeCloseTo(0.1, 12);
    // No overlay row for small-files in this run: no ratio, never a remembered number.
    expect(find('ephemera', 'small-files').vsOverlay).toBeNull();
  });

  it('keeps workloads in first-seen order with targets in run order', () => {
    expect(rows.map((r) => `${r.workload}/${r.target}`)).toEqual([
      'randwrite-4k/tmpfs',
      'randwrite-4k/overlay',
      'randwrite-4k/ephemera',
      'small-files/tmpfs',
      'small-files/ephemera',
      'daemon-rss-idle/ephemera',
      'daemon-counters/ephemera',
    ]);
  });
});

describe('renderTable', () => {
  it('prints medians and ratios and leaves daemon rows to the lines under it', () => {
    const rows = summarize(RESULTS);
    const table = renderTable(rows);
    const lines = table.split('\n');
    expect(lines[0]).toMatch(/^target\s+workload\s+IOPS\s+lat µs\s+files\/s\s+passes\s+vs tmpfs\s+vs overlay$/);
    expect(lines).toHaveLength(6);
    expect(lines[3]).toMatch(/^ephemera\s+randwrite-4k\s+400\.0k\s+2\.50\s+—\s+3\s+2\.00×\s+4\.00×$/);
    expect(lines[5]).toMatch(/^ephemera\s+small-files\s+—\s+—\s+6000\s+1\s+0\.10×\s+—$/);
    expect(table).not.toContain('daemon-');
    expect(renderDaemonLines(RESULTS, rows)).toEqual([
      'ephemera daemon VmRSS, median: rss-idle 40.0 MiB',
      'ephemera pass 1 counters: READ=0 WRITE=0 (LOOKUP=12)',
    ]);
  });
});

describe('toJsonDocument', () => {
  it('writes every pass with the named figures at top level, plus summary, failures and run', () => {
    const failure = { target: 'ephemera', pass: 2, code: 'E_TARGET_SETUP', message: 'no mount' };
    const doc = JSON.parse(JSON.stringify(toJsonDocument(RESULTS, [failure], RUN))) as unknown;
    const Row = z.object({
      suite: z.string(),
      target: z.string(),
      workload: z.string(),
      parameters: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
      pass: z.number().int().positive(),
      phase: z.enum(['cold', 'warm', 'n/a']),
      figures: z.record(z.string(), z.number()),
      oomKills: z.number().nullable(),
      iops: z.number().nullable(),
      bw_mibs: z.number().nullable(),
      lat_us: z.number().nullable(),
      files_per_s: z.number().nullable(),
    });
    const Doc = z.object({
      results: z.array(Row),
      summary: z.array(z.object({ target: z.string(), workload: z.string(), medians: z.record(z.string(), z.number()) })),
      failures: z.array(z.object({ target: z.string(), pass: z.number(), code: z.string(), message: z.string() })),
      run: z.object({ suite: z.literal('fio'), passes: z.number() }),
    });
    const parsed = Doc.parse(doc);
    expect(parsed.results).toHaveLength(RESULTS.length);
    expect(parsed.results[0]).toMatchObject({ target: 'tmpfs', workload: 'randwrite-4k', pass: 1, iops: 190_000, lat_us: 5, bw_mibs: null, files_per_s: null });
    expect(parsed.results[9]).toMatchObject({ workload: 'small-files', iops: null, files_per_s: 60_000 });
    expect(parsed.failures).toEqual([failure]);
  });
});

describe('variants', () => {
  it('splits rows by parameters that vary within a target, not by ones that differ between targets', () => {
    const p = (target: string, pass: number, parameters: BenchResult['parameters'], value: number): BenchResult => ({
      suite: 's',
      target,
      workload: 'w',
      parameters,
      pass,
      phase: 'n/a',
      figures: { ops_per_s: value },
      oomKills: null,
    });
    const rows = summarize([
      p('tmpfs', 1, { size: 1 }, 10),
      p('ephemera', 1, { size: 1, mode: 'passthrough' }, 20),
      p('tmpfs', 1, { size: 2 }, 40),
      p('ephemera', 1, { size: 2, mode: 'passthrough' }, 20),
      p('tmpfs', 2, { size: 1 }, 30),
      p('ephemera', 2, { size: 1, mode: 'passthrough' }, 30),
    ]);
    expect(rows.map((r) => [r.target, r.variant, r.passes, r.medians.ops_per_s, r.vsTmpfs])).toEqual([
      ['tmpfs', 'size=1', 2, 20, 1],
      ['ephemera', 'size=1', 2, 25, 1.25],
      ['tmpfs', 'size=2', 1, 40, 1],
      ['ephemera', 'size=2', 1, 20, 0.5],
    ]);
    expect(renderTable(rows).split('\n')[2]).toMatch(/^ephemera\s+w size=1\s+25\.0\s+2\s+1\.25×\s+—$/);
  });
});

describe('primary figure', () => {
  it('follows parameters.primary when the row has that figure', () => {
    const rows = summarize([
      { suite: 'fio', target: 'tmpfs', workload: 'seq', parameters: { primary: 'bw_mibs' }, pass: 1, phase: 'n/a', figures: { iops: 10, bw_mibs: 10, lat_us: 4 }, oomKills: null },
      { suite: 'fio', target: 'x', workload: 'seq', parameters: { primary: 'nope' }, pass: 1, phase: 'n/a', figures: { lat_us: 2 }, oomKills: null },
    ]);
    expect(rows.map((r) => r.primary)).toEqual(['bw_mibs', 'lat_us']);
  });
});
