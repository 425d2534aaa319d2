import type { BenchResult, TargetFailure } from './frame';

/** Figures where smaller is better; their ratios are inverted so that > 1 always means "better than the baseline". */
const LOWER_IS_BETTER: ReadonlySet<string> = new Set(['seconds', 'rss_mib']);

/** Times (`*_s`, `*_ms`, `*_us`, `*_ns`, `seconds`) and memory are better lower; rates (`*_per_s`), IOPS and bandwidth higher. */
export function lowerIsBetter(figure: string): boolean {
  if (figure.endsWith('_per_s')) return false;
  return LOWER_IS_BETTER.has(figure) || /_(s|ms|us|ns)$/.test(figure);
}

/** Which figure a row's ratios are taken on: the first of these it has (iops and MiB/s give one ratio for a fixed block size). */
export const PRIMARY_FIGURES = ['iops', 'bw_mibs', 'files_per_s', 'decisions_per_s', 'ops_per_s', 'seconds'] as const;

/** The figures issue 2 names as top-level fields of every JSON row (null where not measured). */
export const NAMED_FIGURES = ['iops', 'bw_mibs', 'lat_us', 'files_per_s'] as const;

/** Rows about a target's daemon (RSS, opcode counters) rather than a workload; shown under the table. */
export const DAEMON_WORKLOAD_PREFIX = 'daemon-';
export const DAEMON_COUNTERS_WORKLOAD = 'daemon-counters';

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * A suite may name the figure its ratios mean with `parameters.primary` (fio: MiB/s for 1 MiB
 * rows, IOPS for 4 KiB ones); otherwise the first of PRIMARY_FIGURES the row has.
 */
export function primaryFigure(figures: Record<string, number>, parameters: BenchResult['parameters'] = {}): string | undefined {
  const named = parameters.primary;
  if (typeof named === 'string' && named in figures) return named;
  return PRIMARY_FIGURES.find((name) => name in figures) ?? Object.keys(figures)[0];
}

/** target relative to baseline, oriented so > 1 means the target did better. */
export function ratio(figure: string, target: number, baseline: number): number | null {
  if (!Number.isFinite(target) || !Number.isFinite(baseline) || target <= 0 || baseline <= 0) return null;
  return lowerIsBetter(figure) ? baseline / target : target / baseline;
}

export interface SummaryRow {
  suite: string;
  target: string;
  workload: string;
  /** The varying parameters that name this row, e.g. "nodes=100"; empty for most rows. */
  variant: string;
  phase: BenchResult['phase'];
  /** How many passes produced this row (a failed pass is missing, not zero). */
  passes: number;
  /** Per figure, the median over passes. */
  medians: Record<string, number>;
  primary: string | undefined;
  /** Median primary figure relative to the baselines' medians from the same run; null if a baseline is missing. */
  vsTmpfs: number | null;
  vsOverlay: number | null;
  /** OOM kills summed over passes (null where no cgroup applies); never hidden from the table. */
  oomKills: number | null;
  /** Passes that produced no figures (the invocation was killed or failed). */
  failedPasses: number;
}

/**
 * The parameters that tell rows of one (suite, workload, target) apart, e.g. `nodes` in the policy
 * suite: they vary within a target, so they name a variant, and medians are taken per variant.
 * Parameters that vary only between targets (the ephemera mount mode) do not split rows.
 */
function variantKeys(results: readonly BenchResult[]): Map<string, string[]> {
  const seen = new Map<string, Map<string, Set<string>>>();
  for (const r of results) {
    const key = `${r.suite}\u0000${r.workload}`;
    for (const [name, value] of Object.entries(r.parameters)) {
      const perKey = seen.get(key) ?? new Map<string, Set<string>>();
      seen.set(key, perKey);
      const values = perKey.get(`${r.target}\u0000${name}`) ?? new Set<string>();
      perKey.set(`${r.target}\u0000${name}`, values);
      values.add(JSON.stringify(value));
    }
  }
  const keys = new Map<string, string[]>();
  for (const [workloadKey, perKey] of seen) {
    const varying = new Set<string>();
    for (const [targetAndName, values] of perKey) if (values.size > 1) varying.add(targetAndName.split('\u0000')[1]!);
    keys.set(workloadKey, [...varying].sort());
  }
  return keys;
}

/** Groups results by (suite, workload, variant, target) in first-seen order and takes medians and ratios. */
export function summarize(results: readonly BenchResult[]): SummaryRow[] {
  const variants = variantKeys(results);
  const variantOf = (r: BenchResult): string =>
    (variants.get(`${r.suite}\u0000${r.workload}`) ?? [])
      .filter((name) => name in r.parameters)
      .map((name) => `${name}=${String(r.parameters[name])}`)
      .join(' ');
  const groups = new Map<string, BenchResult[]>();
  const workloadOrder: string[] = [];
  for (const r of results) {
    const workloadKey = `${r.suite}\u0000${r.workload}\u0000${variantOf(r)}`;
    if (!workloadOrder.includes(workloadKey)) workloadOrder.push(workloadKey);
    // Cold and warm invocations of one workload are different rows, never one median.
    const key = `${workloadKey}\u0000${r.phase}\u0000${r.target}`;
    const list = groups.get(key) ?? [];
    list.push(r);
    groups.set(key, list);
  }
  const rows: SummaryRow[] = [];
  for (const list of groups.values()) {
    const first = list[0]!;
    const figureNames = [...new Set(list.flatMap((r) => Object.keys(r.figures)))];
    const ooms = list.map((r) => r.oomKills).filter((n): n is number => typeof n === 'number');
    const medians: Record<string, number> = {};
    for (const name of figureNames) {
      const values = list.map((r) => r.figures[name]).filter((v): v is number => typeof v === 'number');
      medians[name] = median(values);
    }
    rows.push({
      suite: first.suite,
      target: first.target,
      workload: first.workload,
      variant: variantOf(first),
      phase: first.phase,
      passes: list.length - list.filter((r) => Object.keys(r.figures).length === 0).length,
      medians,
      primary: primaryFigure(medians, first.parameters),
      vsTmpfs: null,
      vsOverlay: null,
      oomKills: ooms.length === 0 ? null : ooms.reduce((a, b) => a + b, 0),
      failedPasses: list.filter((r) => Object.keys(r.figures).length === 0).length,
    });
  }
  for (const row of rows) {
    if (!row.primary) continue;
    const baseline = (target: string): number | undefined =>
      rows.find((b) => b.suite === row.suite && b.workload === row.workload && b.variant === row.variant && b.phase === row.phase && b.target === target)
        ?.medians[row.primary!];
    const tmpfs = baseline('tmpfs');
    const overlay = baseline('overlay');
    const own = row.medians[row.primary]!;
    row.vsTmpfs = tmpfs === undefined ? null : ratio(row.primary, own, tmpfs);
    row.vsOverlay = overlay === undefined ? null : ratio(row.primary, own, overlay);
  }
  const workloadIndex = (r: SummaryRow): number => workloadOrder.indexOf(`${r.suite}\u0000${r.workload}\u0000${r.variant}`);
  return rows
    .map((row, i) => ({ row, i }))
    .sort((a, b) => workloadIndex(a.row) - workloadIndex(b.row) || a.i - b.i)
    .map(({ row }) => row);
}

/** How a row is named in tables and charts: the workload, its variant, and its cache phase if the name lacks it. */
export function rowLabel(r: Pick<SummaryRow, 'workload' | 'variant' | 'phase'>): string {
  const phase = r.phase === 'n/a' || r.workload.endsWith(r.phase) ? '' : ` (${r.phase})`;
  return `${r.workload}${r.variant ? ` ${r.variant}` : ''}${phase}`;
}

/** Compact figure: 415.2k, 1.23M, 9.87, so a table of IOPS and latencies stays narrow. */
export function formatFigure(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

const FIGURE_HEADINGS: Record<string, string> = {
  iops: 'IOPS',
  bw_mibs: 'MiB/s',
  lat_us: 'lat µs',
  files_per_s: 'files/s',
  create_files_per_s: 'creates/s',
};

function alignRows(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => [...(r[col] ?? '')].length)));
  return rows
    .map((r) => r.map((cell, col) => (col < 2 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join('  ').trimEnd())
    .join('\n');
}

/** The workload table: medians over passes, ratios to tmpfs and overlay (> 1 = better than the baseline), OOM kills. */
export function renderTable(rows: readonly SummaryRow[]): string {
  const tableRows = rows.filter((r) => !r.workload.startsWith(DAEMON_WORKLOAD_PREFIX));
  if (tableRows.length === 0) return '(no results)';
  const figureNames = [...new Set(tableRows.flatMap((r) => Object.keys(r.medians)))];
  const showOom = tableRows.some((r) => r.oomKills !== null && r.oomKills !== undefined);
  const showFailed = tableRows.some((r) => (r.failedPasses ?? 0) > 0);
  const header = [
    'target',
    'workload',
    ...figureNames.map((f) => FIGURE_HEADINGS[f] ?? f),
    'passes',
    ...(showFailed ? ['failed'] : []),
    'vs tmpfs',
    'vs overlay',
    ...(showOom ? ['OOM kills'] : []),
  ];
  const body = tableRows.map((r) => [
    r.target,
    rowLabel(r),
    ...figureNames.map((f) => (r.medians[f] === undefined ? '—' : formatFigure(r.medians[f]))),
    String(r.passes),
    ...(showFailed ? [String(r.failedPasses ?? 0)] : []),
    r.vsTmpfs === null ? '—' : `${r.vsTmpfs.toFixed(2)}×`,
    r.vsOverlay === null ? '—' : `${r.vsOverlay.toFixed(2)}×`,
    ...(showOom ? [r.oomKills === null || r.oomKills === undefined ? '—' : String(r.oomKills)] : []),
  ]);
  return alignRows([header, ...body]);
}

/** Lines under the table: each daemon's RSS medians and, per pass, the opcode counters from its stopped line. */
export function renderDaemonLines(results: readonly BenchResult[], rows: readonly SummaryRow[]): string[] {
  const lines: string[] = [];
  const daemonTargets = [...new Set(results.filter((r) => r.workload.startsWith(DAEMON_WORKLOAD_PREFIX)).map((r) => r.target))];
  for (const target of daemonTargets) {
    const rss = rows
      .filter((r) => r.target === target && r.medians.rss_mib !== undefined)
      .map((r) => `${r.workload.slice(DAEMON_WORKLOAD_PREFIX.length)} ${r.medians.rss_mib!.toFixed(1)} MiB`);
    const mode = results.find((r) => r.target === target && typeof r.parameters.mode === 'string')?.parameters.mode;
    if (rss.length > 0) lines.push(`${target}${mode ? ` (${String(mode)})` : ''} daemon VmRSS, median: ${rss.join(', ')}`);
    for (const r of results.filter((x) => x.target === target && x.workload === DAEMON_COUNTERS_WORKLOAD)) {
      const { READ, WRITE, ...others } = r.figures;
      const rest = Object.entries(others)
        .filter(([, n]) => n > 0)
        .map(([op, n]) => `${op}=${n}`)
        .join(' ');
      // The daemon lists only opcodes it saw; an absent READ/WRITE is a count of 0 (the figure the
      // passthrough check wants), while the JSON keeps the stopped line exactly as printed.
      lines.push(`${target} pass ${r.pass} counters: READ=${READ ?? 0} WRITE=${WRITE ?? 0}${rest ? ` (${rest})` : ''}`);
    }
  }
  return lines;
}

export interface RunInfo {
  suite: string;
  quick: boolean;
  passes: number;
  targets: string[];
  startedAt: string;
  finishedAt: string;
  host: { kernel: string; cpus: number; memoryMiB: number };
  /** Why the run ended early (E_TIME_CAP, E_INTERRUPTED), if it did. */
  stoppedBy?: string;
  /** Absolute path of the report.html written with this run (`--report`), if any. */
  report?: string;
}

export type JsonRow = BenchResult & Record<(typeof NAMED_FIGURES)[number], number | null>;

export interface BenchJsonDocument {
  results: JsonRow[];
  summary: SummaryRow[];
  failures: TargetFailure[];
  run: RunInfo;
}

/** The file `--json` writes: every pass of every row, plus the summary the table was printed from. */
export function toJsonDocument(results: readonly BenchResult[], failures: readonly TargetFailure[], run: RunInfo): BenchJsonDocument {
  return {
    results: results.map((r) => {
      const named = Object.fromEntries(NAMED_FIGURES.map((f) => [f, r.figures[f] ?? null])) as Record<(typeof NAMED_FIGURES)[number], number | null>;
      return { ...r, ...named };
    }),
    summary: summarize(results),
    failures: [...failures],
    run,
  };
}
