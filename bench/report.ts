import * as fs from 'node:fs';
import * as path from 'node:path';
import { headline, renderHeadline } from './headline';
import { formatFigure, renderDaemonLines, rowLabel, DAEMON_WORKLOAD_PREFIX, type BenchJsonDocument, type SummaryRow } from './summary';

const FIGURE_UNITS: Record<string, string> = {
  iops: 'IOPS',
  bw_mibs: 'MiB/s',
  files_per_s: 'files/s',
  lat_us: 'µs',
  seconds: 's',
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface Bar {
  label: string;
  value: number;
  note?: string;
  /** OOM kills behind this bar: drawn as a red mark, never hidden. */
  oomKills?: number;
}

/**
 * How a chart's <svg> opens. In the page it is as wide as its column (`width="100%"`, the height
 * following the viewBox's aspect), so it uses the page's width; the files written for the README
 * keep a fixed size, since an <img> of an SVG without one has no size to lay out at.
 */
export type ChartSize = 'responsive' | 'fixed';

function svgOpen(className: string, title: string, width: number, height: number, size: ChartSize): string {
  const dims = size === 'fixed' ? `width="${width}" height="${height}"` : 'width="100%"';
  return `<svg xmlns="http://www.w3.org/2000/svg" class="${className}" ${dims} viewBox="0 0 ${width} ${height}" preserveAspectRatio="xMinYMin meet" role="img" aria-label="${escapeHtml(title)}" font-family="sans-serif" font-size="12">`;
}

/** A horizontal bar chart as inline SVG: one bar per target, longest bar = largest value. */
export function barChartSvg(title: string, unit: string, bars: readonly Bar[], size: ChartSize = 'responsive'): string {
  const labelWidth = 130;
  const chartWidth = 380;
  const noteWidth = 330;
  const barHeight = 22;
  const gap = 6;
  const top = 28;
  const height = top + bars.length * (barHeight + gap) + 4;
  const width = labelWidth + chartWidth + noteWidth;
  const max = Math.max(...bars.map((b) => b.value), 0);
  const rows = bars.map((bar, i) => {
    const y = top + i * (barHeight + gap);
    const w = max > 0 ? Math.max(1, (bar.value / max) * chartWidth) : 0;
    const oom = bar.oomKills ? `OOM-killed ×${bar.oomKills}` : '';
    const text = [Number.isFinite(bar.value) && bar.value > 0 ? `${formatFigure(bar.value)} ${unit}` : 'no result', bar.note, oom].filter(Boolean).join(' · ');
    return [
      `<text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end">${escapeHtml(bar.label)}</text>`,
      `<rect class="bar" fill="#4a7bb7" x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" data-value="${bar.value}"><title>${escapeHtml(`${bar.label}: ${text}`)}</title></rect>`,
      bar.oomKills ? `<text class="oom" fill="#c00" font-weight="bold" x="${labelWidth + 2}" y="${y + 16}" data-oom="${bar.oomKills}">✕</text>` : '',
      `<text x="${(labelWidth + w + (bar.oomKills ? 16 : 6)).toFixed(1)}" y="${y + 15}"${bar.oomKills ? ' fill="#c00"' : ''}>${escapeHtml(text)}</text>`,
    ].join('');
  });
  return (
    svgOpen('chart', title, width, height, size) +
    `<text class="title" font-weight="bold" x="0" y="16">${escapeHtml(title)}</text>${rows.join('')}</svg>`
  );
}

/** The one numeric parameter a summary row's variant names (a sweep point), if it names exactly one. */
export function sweepPoint(variant: string): { key: string; x: number } | undefined {
  const parts = variant.split(' ').filter(Boolean);
  if (parts.length !== 1) return undefined;
  const [key, value] = parts[0]!.split('=');
  const x = Number(value);
  return key && Number.isFinite(x) ? { key, x } : undefined;
}

const LINE_COLOURS = ['#4a7bb7', '#d1495b', '#66a182', '#edae49', '#8e6c8a', '#2e4057', '#999999'];
/** A target keeps its colour in every chart. */
const COLOUR_ORDER = ['ephemera', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk', 'ephemera-noshare', 'ephemera-disk'];

function colourOf(target: string, fallbackIndex: number): string {
  const i = COLOUR_ORDER.indexOf(target);
  return LINE_COLOURS[(i >= 0 ? i : COLOUR_ORDER.length + fallbackIndex) % LINE_COLOURS.length]!;
}

function axisNumber(x: number): string {
  return Number.isInteger(x) && Math.abs(x) < 1e4 ? String(x) : formatFigure(x);
}

export interface SweepLine {
  target: string;
  points: Array<{ x: number; y: number | null; oomKills: number }>;
}

/** A sweep as lines, one per target, log-scaled x when the points span more than 20×; OOM kills as red ✕ on the x axis. */
export function lineChartSvg(title: string, xLabel: string, unit: string, lines: readonly SweepLine[], size: ChartSize = 'responsive'): string {
  // Wide and low, so that at the page's width (it scales with it) a chart is not taller than a screen.
  const width = 880;
  const height = 320;
  const left = 70;
  const right = 150;
  const top = 30;
  const bottom = 50;
  const xs = [...new Set(lines.flatMap((l) => l.points.map((p) => p.x)))].sort((a, b) => a - b);
  const ys = lines.flatMap((l) => l.points.map((p) => p.y)).filter((y): y is number => y !== null && Number.isFinite(y));
  const maxY = Math.max(...ys, 0) * 1.1 || 1;
  const logX = xs.length > 1 && xs[0]! > 0 && xs[xs.length - 1]! / xs[0]! > 20;
  const fx = (x: number): number => {
    if (xs.length === 1) return left + (width - left - right) / 2;
    const t = logX ? (Math.log(x) - Math.log(xs[0]!)) / (Math.log(xs[xs.length - 1]!) - Math.log(xs[0]!)) : (x - xs[0]!) / (xs[xs.length - 1]! - xs[0]!);
    return left + t * (width - left - right);
  };
  const fy = (y: number): number => top + (1 - y / maxY) * (height - top - bottom);
  const parts: string[] = [];
  parts.push(`<line x1="${left}" y1="${height - bottom}" x2="${width - right}" y2="${height - bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="#333"/>`);
  for (const x of xs) parts.push(`<text x="${fx(x).toFixed(1)}" y="${height - bottom + 16}" text-anchor="middle">${escapeHtml(axisNumber(x))}</text>`);
  for (const f of [0, 0.5, 1]) parts.push(`<text x="${left - 6}" y="${(fy(maxY * f) + 4).toFixed(1)}" text-anchor="end">${escapeHtml(formatFigure(maxY * f))}</text>`);
  parts.push(`<text x="${(left + width - right) / 2}" y="${height - 12}" text-anchor="middle">${escapeHtml(`${xLabel}${logX ? ' (log)' : ''}`)}</text>`);
  parts.push(`<text x="14" y="${top + (height - top - bottom) / 2}" transform="rotate(-90 14 ${top + (height - top - bottom) / 2})" text-anchor="middle">${escapeHtml(unit)}</text>`);
  lines.forEach((line, i) => {
    const colour = colourOf(line.target, i);
    const drawn = line.points.filter((p) => p.y !== null).sort((a, b) => a.x - b.x);
    if (drawn.length > 1)
      parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${drawn.map((p) => `${fx(p.x).toFixed(1)},${fy(p.y!).toFixed(1)}`).join(' ')}"/>`);
    for (const p of drawn)
      parts.push(`<circle class="point" cx="${fx(p.x).toFixed(1)}" cy="${fy(p.y!).toFixed(1)}" r="3.5" fill="${colour}" data-target="${escapeHtml(line.target)}" data-x="${p.x}" data-value="${p.y}"><title>${escapeHtml(`${line.target} ${xLabel}=${p.x}: ${formatFigure(p.y!)} ${unit}`)}</title></circle>`);
    for (const p of line.points.filter((q) => q.oomKills > 0))
      parts.push(`<text class="oom" fill="#c00" font-weight="bold" font-size="11" x="${(fx(p.x) - 4).toFixed(1)}" y="${(height - bottom - 4 - i * 12).toFixed(1)}" data-target="${escapeHtml(line.target)}" data-oom="${p.oomKills}">✕ <tspan fill="${colour}">${escapeHtml(line.target)}</tspan><title>${escapeHtml(`${line.target} ${xLabel}=${p.x}: ${p.oomKills} OOM kill(s)`)}</title></text>`);
    parts.push(`<line x1="${width - right + 12}" y1="${top + 8 + i * 18}" x2="${width - right + 32}" y2="${top + 8 + i * 18}" stroke="${colour}" stroke-width="2"/>`);
    parts.push(`<text x="${width - right + 38}" y="${top + 12 + i * 18}">${escapeHtml(line.target)}</text>`);
  });
  parts.push(`<text fill="#c00" x="${width - right + 12}" y="${top + 12 + lines.length * 18 + 6}">✕ = OOM kill</text>`);
  return (
    svgOpen('chart sweep', title, width, height, size) +
    `<text class="title" font-weight="bold" x="0" y="16">${escapeHtml(title)}</text>${parts.join('')}</svg>`
  );
}

export interface Chart {
  /** File-name-safe name, for the SVG files written next to report.html. */
  slug: string;
  svg: string;
}

function slugOf(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 80);
}

/** Bars for workloads without a sweep, lines for each sweep (workload × phase). */
export function chartsFor(summary: readonly SummaryRow[], size: ChartSize = 'responsive'): Chart[] {
  const shown = summary.filter((r) => !r.workload.startsWith(DAEMON_WORKLOAD_PREFIX));
  const charts: Chart[] = [];
  const sweepKey = (r: SummaryRow): string => `${r.suite}/${r.workload}${r.phase === 'n/a' ? '' : ` (${r.phase})`}`;
  const sweeps = new Map<string, SummaryRow[]>();
  const barRows: SummaryRow[] = [];
  for (const r of shown) {
    if (sweepPoint(r.variant)) sweeps.set(sweepKey(r), [...(sweeps.get(sweepKey(r)) ?? []), r]);
    else barRows.push(r);
  }
  const bySweepKey = new Map([...sweeps].filter(([, rows]) => new Set(rows.map((r) => r.variant)).size > 1));
  for (const [key, rows] of sweeps) if (!bySweepKey.has(key)) barRows.push(...rows);
  const chartKey = (r: SummaryRow): string => `${r.suite}/${rowLabel(r)}`;
  for (const key of [...new Set(barRows.map(chartKey))]) {
    const rows = barRows.filter((r) => chartKey(r) === key);
    const figure = rows.find((r) => r.primary !== undefined)?.primary ?? '';
    const bars = rows.map((r) => ({
      label: r.target,
      value: r.medians[figure] ?? 0,
      oomKills: r.oomKills ?? 0,
      note: [r.vsTmpfs === null ? '' : `${r.vsTmpfs.toFixed(2)}× tmpfs`, r.vsOverlay === null ? '' : `${r.vsOverlay.toFixed(2)}× overlay`]
        .filter(Boolean)
        .join(', '),
    }));
    charts.push({ slug: slugOf(key), svg: barChartSvg(`${key} — median ${FIGURE_UNITS[figure] ?? figure}`, FIGURE_UNITS[figure] ?? figure, bars, size) });
  }
  for (const [key, rows] of bySweepKey) {
    const figure = rows.find((r) => r.primary !== undefined)?.primary ?? '';
    const xKey = sweepPoint(rows[0]!.variant)!.key;
    const order = (t: string): number => (COLOUR_ORDER.includes(t) ? COLOUR_ORDER.indexOf(t) : COLOUR_ORDER.length);
    const targets = [...new Set(rows.map((r) => r.target))].sort((a, b) => order(a) - order(b));
    const lines = targets.map((target) => ({
      target,
      points: rows
        .filter((r) => r.target === target)
        .map((r) => ({ x: sweepPoint(r.variant)!.x, y: r.medians[figure] ?? null, oomKills: r.oomKills ?? 0 })),
    }));
    charts.push({ slug: slugOf(key), svg: lineChartSvg(`${key} — median ${FIGURE_UNITS[figure] ?? figure}`, xKey, FIGURE_UNITS[figure] ?? figure, lines, size) });
  }
  return charts;
}

function summaryTableHtml(summary: readonly SummaryRow[]): string {
  const figures = [...new Set(summary.flatMap((r) => Object.keys(r.medians)))];
  const head = ['target', 'workload', ...figures, 'passes', 'failed', 'vs tmpfs', 'vs overlay', 'OOM kills'].map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const body = summary
    .map((r) => {
      const cells = [
        r.target,
        rowLabel(r),
        ...figures.map((f) => (r.medians[f] === undefined ? '—' : formatFigure(r.medians[f]))),
        String(r.passes),
        String(r.failedPasses ?? 0),
        r.vsTmpfs === null ? '—' : `${r.vsTmpfs.toFixed(2)}×`,
        r.vsOverlay === null ? '—' : `${r.vsOverlay.toFixed(2)}×`,
        r.oomKills === null || r.oomKills === undefined ? '—' : String(r.oomKills),
      ];
      return `<tr${r.oomKills ? ' class="oom"' : ''}>${cells.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`;
    })
    .join('\n');
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** One self-contained page: the headline first, then charts, the summary table, daemon lines, failures, and the JSON behind them. */
export function renderReportHtml(doc: BenchJsonDocument): string {
  const top = renderHeadline(headline(doc.summary, { failures: doc.failures, stoppedBy: doc.run.stoppedBy ? [doc.run.stoppedBy] : [] }));
  const daemon = renderDaemonLines(doc.results, doc.summary);
  const failures = doc.failures.map((f) => `${f.target} pass ${f.pass}${f.workload ? ` ${f.workload}` : ''}: ${f.code} ${f.message}`);
  // Inside <script>, only "</script" and "<!--" can end or confuse the element; escaping every "<" covers both.
  const json = JSON.stringify(doc).replace(/</g, '\\u003c');
  const run = doc.run;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ephemera bench ${escapeHtml(run.suite)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:1em 2em;color:#222}
#headline{font-size:1.15em;border-left:4px solid #4a7bb7;padding:.2em 1em;margin:0 0 1em}
#headline p{margin:.3em 0}
#charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,760px),1fr));gap:1em 2em}
svg.chart{display:block;width:100%;height:auto;margin:.5em 0;font:12px system-ui,sans-serif}
svg .title{font-weight:bold}
svg rect.bar{fill:#4a7bb7}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}
.failures{color:#a00}
tr.oom td{color:#c00}
</style></head><body>
<section id="headline">${top.map((line) => `<p>${escapeHtml(line)}</p>`).join('')}</section>
<h1>ephemera bench ${escapeHtml(run.suite)}${run.quick ? ' (quick)' : ''}</h1>
<p>${escapeHtml(`${run.passes} pass(es), targets ${run.targets.join(', ')}; ${run.startedAt} → ${run.finishedAt}; kernel ${run.host.kernel}, ${run.host.cpus} CPUs, ${run.host.memoryMiB} MiB`)}${run.stoppedBy ? ` — <b>stopped early: ${escapeHtml(run.stoppedBy)}</b>` : ''}</p>
<p>Bars are medians over passes; ratios are against tmpfs and overlay from the same run (&gt; 1 = better).</p>
<section id="charts">
${chartsFor(doc.summary).map((c) => c.svg).join('\n')}
</section>
<h2>Summary</h2>
${summaryTableHtml(doc.summary)}
${daemon.length ? `<h2>Daemon</h2><pre>${escapeHtml(daemon.join('\n'))}</pre>` : ''}
${failures.length ? `<h2>Failures</h2><pre class="failures">${escapeHtml(failures.join('\n'))}</pre>` : ''}
<script type="application/json" id="bench-data">${json}</script>
<script>
// Marks on <body> what actually laid out, so a headless browser (the report test) can check it.
(function () {
  var charts = Array.prototype.slice.call(document.querySelectorAll('svg.chart'));
  var drawn = charts.filter(function (c) { return c.getBoundingClientRect().width > 0 && c.querySelector('[data-value]'); });
  var data = JSON.parse(document.getElementById('bench-data').textContent);
  document.body.setAttribute('data-charts', String(charts.length));
  document.body.setAttribute('data-charts-drawn', String(drawn.length));
  document.body.setAttribute('data-marks', String(document.querySelectorAll('svg.chart [data-value]').length));
  document.body.setAttribute('data-oom-marks', String(document.querySelectorAll('svg.chart [data-oom]').length));
  document.body.setAttribute('data-rows', String(data.summary.length));
  // Widths in CSS pixels, so the test can see the charts follow the window's width.
  document.body.setAttribute('data-body-width', String(Math.round(document.body.getBoundingClientRect().width)));
  document.body.setAttribute('data-chart-width', String(Math.round(Math.max.apply(null, charts.map(function (c) { return c.getBoundingClientRect().width; }).concat([0])))));
})();
</script>
</body></html>
`;
}

/** Where `writeReport(dir, …)` puts the page. */
export function reportPath(dir: string): string {
  return path.resolve(dir, 'report.html');
}

/** Writes DIR/report.html, DIR/<suite>.json and each chart as DIR/charts/<suite>-<chart>.svg (for the README). */
export function writeReport(dir: string, doc: BenchJsonDocument): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = reportPath(dir);
  fs.writeFileSync(file, renderReportHtml(doc));
  fs.writeFileSync(path.join(dir, `${slugOf(doc.run.suite)}.json`), `${JSON.stringify(doc, null, 2)}\n`);
  const chartDir = path.join(dir, 'charts');
  fs.mkdirSync(chartDir, { recursive: true });
  chartsFor(doc.summary, 'fixed').forEach((c, i) =>
    fs.writeFileSync(path.join(chartDir, `${slugOf(doc.run.suite)}-${String(i + 1).padStart(2, '0')}-${c.slug}.svg`), `<?xml version="1.0" encoding="UTF-8"?>\n${c.svg}\n`),
  );
  return file;
}
