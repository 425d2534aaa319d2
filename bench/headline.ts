import type { TargetFailure } from './frame';
import { median, DAEMON_WORKLOAD_PREFIX, type BenchJsonDocument, type SummaryRow } from './summary';

/**
 * The ten-second reading of a run, printed above the full table and at the top of report.html:
 * Ephemera's median ratio to tmpfs and to overlay, the OOM kills it avoided, what failed, where
 * the reports are. A pure function of the summary rows, so it is tested on hand-made rows.
 */
export interface Headline {
  /** Median of Ephemera's per-row ratios (> 1 = faster); rows without a ratio (the baseline was killed) are left out. */
  vsTmpfs: { median: number; rows: number } | null;
  vsOverlay: { median: number; rows: number } | null;
  /** Baseline OOM kills in rows where Ephemera finished with 0: what running on Ephemera avoided. */
  oomKillsAvoided: { total: number; rows: number; byTarget: Record<string, number> };
  /** Ephemera's own OOM kills over all rows (its promise is 0). */
  ephemeraOomKills: number;
  /** Failed steps that are not a baseline's OOM kill (that one is a result): an Ephemera kill, a setup error, a failed workload. */
  failedSteps: string[];
  reports: string[];
}

/** The target the headline speaks for, and the baselines whose OOM kills it counts as avoided. */
export const HEADLINE_TARGET = 'ephemera';
const OOM_BASELINES = ['tmpfs', 'overlay'] as const;

/** One table row: a workload at one variant and cache phase, in one suite. */
function rowKey(r: Pick<SummaryRow, 'suite' | 'workload' | 'variant' | 'phase'>): string {
  return `${r.suite}\u0000${r.workload}\u0000${r.variant}\u0000${r.phase}`;
}

/** A baseline target OOM-killed is what the comparison is about; any other failure is a failed step. */
export function isResultNotFailure(f: Pick<TargetFailure, 'target' | 'code'>): boolean {
  return f.code === 'E_OOM_KILLED' && f.target !== HEADLINE_TARGET && !f.target.startsWith(`${HEADLINE_TARGET}-`);
}

export function headline(
  rows: readonly SummaryRow[],
  opts: { failures?: readonly TargetFailure[]; stoppedBy?: readonly string[]; reports?: readonly string[] } = {},
): Headline {
  const shown = rows.filter((r) => !r.workload.startsWith(DAEMON_WORKLOAD_PREFIX));
  const ours = shown.filter((r) => r.target === HEADLINE_TARGET);
  const ratios = (pick: (r: SummaryRow) => number | null): Headline['vsTmpfs'] => {
    const values = ours.map(pick).filter((v): v is number => v !== null && Number.isFinite(v));
    return values.length === 0 ? null : { median: median(values), rows: values.length };
  };
  // Ephemera "avoided" a kill only where it produced a result itself, with no kill of its own.
  const cleanOurs = new Set(ours.filter((r) => r.oomKills === 0 && r.passes > 0).map(rowKey));
  const byTarget: Record<string, number> = Object.fromEntries(OOM_BASELINES.map((t) => [t, 0]));
  const avoidedRows = new Set<string>();
  for (const r of shown) {
    if (!(OOM_BASELINES as readonly string[]).includes(r.target) || !(r.oomKills && r.oomKills > 0) || !cleanOurs.has(rowKey(r))) continue;
    byTarget[r.target]! += r.oomKills;
    avoidedRows.add(rowKey(r));
  }
  const failedSteps = [
    ...(opts.stoppedBy ?? []).map((why) => `stopped early: ${why}`),
    ...[...new Set((opts.failures ?? []).filter((f) => !isResultNotFailure(f)).map((f) => `${f.target}${f.workload ? ` ${f.workload}` : ''}: ${f.code}`))],
  ];
  return {
    vsTmpfs: ratios((r) => r.vsTmpfs),
    vsOverlay: ratios((r) => r.vsOverlay),
    oomKillsAvoided: { total: Object.values(byTarget).reduce((a, b) => a + b, 0), rows: avoidedRows.size, byTarget },
    ephemeraOomKills: ours.reduce((sum, r) => sum + (r.oomKills ?? 0), 0),
    failedSteps,
    reports: [...(opts.reports ?? [])],
  };
}

/** The headline of one or more `--json` documents (the demo's two suites). */
export function headlineOfDocs(docs: readonly BenchJsonDocument[]): Headline {
  return headline(
    docs.flatMap((d) => d.summary),
    {
      failures: docs.flatMap((d) => d.failures),
      stoppedBy: docs.flatMap((d) => (d.run.stoppedBy ? [`${d.run.suite}: ${d.run.stoppedBy}`] : [])),
      reports: docs.flatMap((d) => (d.run.report ? [d.run.report] : [])),
    },
  );
}

function ratioText(r: Headline['vsTmpfs'], baseline: string): string {
  // A row of the table below: one workload at one point of its sweep, in one cache phase.
  return r === null ? `— ${baseline} (no row with a ratio)` : `${r.median.toFixed(2)}× ${baseline} (median of ${r.rows} row${r.rows === 1 ? '' : 's'})`;
}

/** The headline as a few plain lines (the terminal, and the report's first section). */
export function renderHeadline(h: Headline): string[] {
  const { byTarget } = h.oomKillsAvoided;
  const killed = Object.entries(byTarget)
    .map(([t, n]) => `${t} ${n}`)
    .join(', ');
  const lines = [
    `Ephemera: ${ratioText(h.vsTmpfs, 'tmpfs')}, ${ratioText(h.vsOverlay, 'overlay')}; > 1 = faster`,
    h.oomKillsAvoided.total > 0
      ? `OOM kills avoided: ${h.oomKillsAvoided.total} (${killed}) in ${h.oomKillsAvoided.rows} row${h.oomKillsAvoided.rows === 1 ? '' : 's'} where Ephemera finished with 0`
      : 'OOM kills avoided: 0 (no baseline was OOM-killed where Ephemera finished)',
    `Ephemera OOM kills: ${h.ephemeraOomKills}`,
  ];
  if (h.failedSteps.length > 0) {
    const shown = h.failedSteps.slice(0, 3).join('; ');
    lines.push(`FAILED steps: ${h.failedSteps.length} (${shown}${h.failedSteps.length > 3 ? '; …' : ''}); details in the failures list`);
  }
  if (h.reports.length > 0) lines.push(`Report${h.reports.length === 1 ? '' : 's'}: ${h.reports.join('  ')}`);
  return lines;
}
