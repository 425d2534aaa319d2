import { describe, expect, it } from 'vitest';
import type { TargetFailure } from '../../bench/frame';
import { headline, headlineOfDocs, isResultNotFailure, renderHeadline } from '../../bench/headline';
import { toJsonDocument, type BenchJsonDocument, type SummaryRow } from '../../bench/summary';
import { impactRow } from './rows';

/** A summary row as `summarize` makes it, written by hand so the expected numbers are known. */
function row(
  target: string,
  workload: string,
  r: { seconds?: number; vsTmpfs?: number | null; vsOverlay?: number | null; oomKills?: number | null; variant?: string; phase?: SummaryRow['phase']; suite?: string },
): SummaryRow {
  const ran = r.seconds !== undefined;
  return {
    suite: r.suite ?? 'impact',
    target,
    workload,
    variant: r.variant ?? '',
    phase: r.phase ?? 'cold',
    passes: ran ? 1 : 0,
    medians: ran ? { seconds: r.seconds! } : {},
    primary: ran ? 'seconds' : undefined,
    vsTmpfs: r.vsTmpfs ?? null,
    vsOverlay: r.vsOverlay ?? null,
    oomKills: r.oomKills === undefined ? 0 : r.oomKills,
    failedPasses: ran ? 0 : 1,
  };
}

// Four workloads. At 64 MiB tmpfs was OOM-killed (twice: cold; the warm phase never ran), so
// Ephemera's cold row there has no tmpfs ratio; everywhere else all three targets finished.
const ROWS: SummaryRow[] = [
  row('ephemera', 'mapreduce', { seconds: 1.0, vsTmpfs: 0.9, vsOverlay: 1.1, phase: 'warm', suite: 'workloads' }),
  row('tmpfs', 'mapreduce', { seconds: 0.9, vsTmpfs: 1, vsOverlay: 1.2, phase: 'warm', suite: 'workloads' }),
  row('overlay', 'mapreduce', { seconds: 1.1, vsTmpfs: 0.8, vsOverlay: 1, phase: 'warm', suite: 'workloads' }),
  row('ephemera', 'impact-memory-limit', { seconds: 40, vsTmpfs: null, vsOverlay: 0.5, variant: 'limit_mib=64' }),
  row('tmpfs', 'impact-memory-limit', { oomKills: 2, variant: 'limit_mib=64' }),
  row('overlay', 'impact-memory-limit', { seconds: 20, vsTmpfs: null, vsOverlay: 1, variant: 'limit_mib=64' }),
  row('ephemera', 'impact-memory-limit', { seconds: 4, vsTmpfs: 1.0, vsOverlay: 1.3, variant: 'limit_mib=128' }),
  row('tmpfs', 'impact-memory-limit', { seconds: 4, vsTmpfs: 1, vsOverlay: 1.3, variant: 'limit_mib=128' }),
  row('overlay', 'impact-memory-limit', { seconds: 5.2, vsTmpfs: 0.77, vsOverlay: 1, variant: 'limit_mib=128' }),
  row('ephemera', 'impact-memory-limit', { seconds: 3, vsTmpfs: 0.8, vsOverlay: 0.9, variant: 'limit_mib=256' }),
  row('tmpfs', 'impact-memory-limit', { seconds: 2.4, vsTmpfs: 1, vsOverlay: 1.1, variant: 'limit_mib=256' }),
  row('overlay', 'impact-memory-limit', { seconds: 2.7, vsTmpfs: 0.9, vsOverlay: 1, variant: 'limit_mib=256' }),
  // The daemon's RSS rows are not workloads and never enter the headline.
  row('ephemera', 'daemon-rss-idle', { seconds: 1, vsTmpfs: 50, vsOverlay: 50, phase: 'n/a' }),
];

describe('headline', () => {
  it('takes the median of Ephemera’s ratios, leaving out rows where tmpfs was OOM-killed (no ratio)', () => {
    const h = headline(ROWS);
    // vs tmpfs: 0.9, 1.0, 0.8 (the 64 MiB row has none) → 0.9 over 3 rows.
    expect(h.vsTmpfs).toEqual({ median: 0.9, rows: 3 });
    // vs overlay: 1.1, 0.5, 1.3, 0.9 → (0.9 + 1.1) / 2 over 4 rows.
    expect(h.vsOverlay!.rows).toBe(4);
    expect(h.vsOverlay!.median).toBeCloseTo(1.0, 10);
  });

  it('counts the baselines’ OOM kills where Ephemera finished with 0 as avoided', () => {
    const h = headline(ROWS);
    expect(h.oomKillsAvoided).toEqual({ total: 2, rows: 1, byTarget: { tmpfs: 2, overlay: 0 } });
    expect(h.ephemeraOomKills).toBe(0);
    expect(h.failedSteps).toEqual([]);
  });

  it('does not call a kill avoided where Ephemera was killed too or produced no result', () => {
    const rows = [
      row('ephemera', 'a', { oomKills: 1 }),
      row('tmpfs', 'a', { oomKills: 3 }),
      row('ephemera', 'b', { oomKills: 0 }), // failed without a result (no seconds)
      row('tmpfs', 'b', { oomKills: 1 }),
      row('ephemera', 'c', { seconds: 2, oomKills: 0, vsOverlay: 1 }),
      row('overlay', 'c', { oomKills: 1 }),
      row('tmpfs', 'c', { oomKills: 4 }),
    ];
    const h = headline(rows);
    expect(h.oomKillsAvoided).toEqual({ total: 5, rows: 1, byTarget: { tmpfs: 4, overlay: 1 } });
    expect(h.ephemeraOomKills).toBe(1);
    expect(h.vsTmpfs).toBeNull();
    expect(h.vsOverlay).toEqual({ median: 1, rows: 1 });
  });

  it('keeps a baseline’s OOM kill as a result and every other failure as a failed step', () => {
    const failures: TargetFailure[] = [
      { target: 'tmpfs', pass: 1, workload: 'impact-memory-limit', code: 'E_OOM_KILLED', message: 'cold: 1 OOM kill(s)' },
      { target: 'tmpfs-huge', pass: 1, workload: 'impact-memory-limit', code: 'E_OOM_KILLED', message: 'cold: 1 OOM kill(s)' },
      { target: 'ephemera', pass: 1, workload: 'impact-file-size', code: 'E_OOM_KILLED', message: 'cold: 1 OOM kill(s)' },
      { target: 'ephemera-disk', pass: 1, workload: 'x', code: 'E_OOM_KILLED', message: '' },
      { target: 'overlay', pass: 1, workload: 'video', code: 'E_WORKLOAD_FAILED', message: 'exit 2' },
      { target: 'overlay', pass: 2, workload: 'video', code: 'E_WORKLOAD_FAILED', message: 'exit 2' },
    ];
    expect(failures.map(isResultNotFailure)).toEqual([true, true, false, false, false, false]);
    const h = headline(ROWS, { failures, stoppedBy: ['impact: E_TIME_CAP: hit its cap'] });
    expect(h.failedSteps).toEqual([
      'stopped early: impact: E_TIME_CAP: hit its cap',
      'ephemera impact-file-size: E_OOM_KILLED',
      'ephemera-disk x: E_OOM_KILLED',
      'overlay video: E_WORKLOAD_FAILED',
    ]);
  });

  it('reads in a few lines: ratios with their row counts, kills avoided, Ephemera’s kills, reports', () => {
    const lines = renderHeadline(headline(ROWS, { reports: ['/out/workloads/report.html', '/out/impact/report.html'] }));
    expect(lines).toEqual([
      'Ephemera: 0.90× tmpfs (median of 3 rows), 1.00× overlay (median of 4 rows); > 1 = faster',
      'OOM kills avoided: 2 (tmpfs 2, overlay 0) in 1 row where Ephemera finished with 0',
      'Ephemera OOM kills: 0',
      'Reports: /out/workloads/report.html  /out/impact/report.html',
    ]);
  });

  it('says so when there is nothing to compare and names failed steps', () => {
    const lines = renderHeadline(
      headline([row('ephemera', 'a', { oomKills: 1 })], { failures: [{ target: 'ephemera', pass: 1, workload: 'a', code: 'E_OOM_KILLED', message: '' }] }),
    );
    expect(lines[0]).toBe('Ephemera: — tmpfs (no row with a ratio), — overlay (no row with a ratio); > 1 = faster');
    expect(lines[1]).toBe('OOM kills avoided: 0 (no baseline was OOM-killed where Ephemera finished)');
    expect(lines[2]).toBe('Ephemera OOM kills: 1');
    expect(lines[3]).toMatch(/^FAILED steps: 1 \(ephemera a: E_OOM_KILLED\)/);
    expect(lines).toHaveLength(4);
  });

  it('gathers rows, failures, early stops and report paths from several --json documents', () => {
    const doc = (suite: string, rows: SummaryRow[], extra: Partial<BenchJsonDocument['run']> = {}): BenchJsonDocument => ({
      results: [],
      summary: rows,
      failures: [],
      run: { suite, quick: true, passes: 1, targets: [], startedAt: '', finishedAt: '', host: { kernel: '', cpus: 2, memoryMiB: 1 }, ...extra },
    });
    const h = headlineOfDocs([
      doc('workloads', ROWS.filter((r) => r.suite === 'workloads'), { report: '/o/workloads/report.html' }),
      doc('impact', ROWS.filter((r) => r.suite === 'impact'), { report: '/o/impact/report.html', stoppedBy: 'E_TIME_CAP: cap' }),
    ]);
    expect(h).toEqual({ ...headline(ROWS, { stoppedBy: ['impact: E_TIME_CAP: cap'] }), reports: ['/o/workloads/report.html', '/o/impact/report.html'] });
  });

  it('over rows summarize made from passes: a killed tmpfs gives no ratio but counts as avoided', () => {
    const pass = impactRow;
    const doc = toJsonDocument(
      [pass('ephemera', 64, 30, 0), pass('tmpfs', 64, undefined, 1), pass('overlay', 64, 15, 0), pass('ephemera', 256, 4, 0), pass('tmpfs', 256, 2, 0), pass('overlay', 256, 8, 0)],
      [{ target: 'tmpfs', pass: 1, workload: 'impact-memory-limit', code: 'E_OOM_KILLED', message: 'cold: 1 OOM kill(s)' }],
      { suite: 'impact', quick: true, passes: 1, targets: [], startedAt: '', finishedAt: '', host: { kernel: '', cpus: 2, memoryMiB: 1 } },
    );
    const h = headlineOfDocs([doc]);
    expect(h.vsTmpfs).toEqual({ median: 0.5, rows: 1 });
    expect(h.vsOverlay).toEqual({ median: (0.5 + 2) / 2, rows: 2 });
    expect(h.oomKillsAvoided).toEqual({ total: 1, rows: 1, byTarget: { tmpfs: 1, overlay: 0 } });
    expect(h.failedSteps).toEqual([]);
  });
});
