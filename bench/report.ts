import * as fs from 'node:fs';
import * as path from 'node:path';
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
}

/** A horizontal bar chart as inline SVG: one bar per target, longest bar = largest value. */
export function barChartSvg(title: string, unit: string, bars: readonly Bar[]): string {
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
    const text = `${formatFigure(bar.value)} ${unit}${bar.note ? ` · ${bar.note}` : ''}`;
    return [
      `<text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end">${escapeHtml(bar.label)}</text>`,
      `<rect class="bar" x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" data-value="${bar.value}"><title>${escapeHtml(`${bar.label}: ${text}`)}</title></rect>`,
      `<text x="${(labelWidth + w + 6).toFixed(1)}" y="${y + 15}">${escapeHtml(text)}</text>`,
    ].join('');
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}">` +
    `<text class="title" x="0" y="16">${escapeHtml(title)}</text>${rows.join('')}</svg>`
  );
}

function chartsFor(summary: readonly SummaryRow[]): string[] {
  const chartKey = (r: SummaryRow): string => `${r.suite}/${rowLabel(r)}`;
  const workloads = [...new Set(summary.filter((r) => !r.workload.startsWith(DAEMON_WORKLOAD_PREFIX)).map(chartKey))];
  return workloads.map((key) => {
    const rows = summary.filter((r) => chartKey(r) === key && r.primary !== undefined);
    const figure = rows[0]?.primary ?? '';
    const bars = rows.map((r) => ({
      label: r.target,
      value: r.medians[figure] ?? 0,
      note: [r.vsTmpfs === null ? '' : `${r.vsTmpfs.toFixed(2)}× tmpfs`, r.vsOverlay === null ? '' : `${r.vsOverlay.toFixed(2)}× overlay`]
        .filter(Boolean)
        .join(', '),
    }));
    return barChartSvg(`${key} — median ${FIGURE_UNITS[figure] ?? figure}`, FIGURE_UNITS[figure] ?? figure, bars);
  });
}

function summaryTableHtml(summary: readonly SummaryRow[]): string {
  const figures = [...new Set(summary.flatMap((r) => Object.keys(r.medians)))];
  const head = ['target', 'workload', ...figures, 'passes', 'vs tmpfs', 'vs overlay'].map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const body = summary
    .map((r) => {
      const cells = [
        r.target,
        rowLabel(r),
        ...figures.map((f) => (r.medians[f] === undefined ? '—' : formatFigure(r.medians[f]))),
        String(r.passes),
        r.vsTmpfs === null ? '—' : `${r.vsTmpfs.toFixed(2)}×`,
        r.vsOverlay === null ? '—' : `${r.vsOverlay.toFixed(2)}×`,
      ];
      return `<tr>${cells.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`;
    })
    .join('\n');
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** One self-contained page: charts, the summary table, daemon lines, failures, and the JSON behind them. */
export function renderReportHtml(doc: BenchJsonDocument): string {
  const daemon = renderDaemonLines(doc.results, doc.summary);
  const failures = doc.failures.map((f) => `${f.target} pass ${f.pass}${f.workload ? ` ${f.workload}` : ''}: ${f.code} ${f.message}`);
  // Inside <script>, only "</script" and "<!--" can end or confuse the element; escaping every "<" covers both.
  const json = JSON.stringify(doc).replace(/</g, '\\u003c');
  const run = doc.run;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ephemera bench ${escapeHtml(run.suite)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
svg.chart{display:block;margin:1em 0;font:12px system-ui,sans-serif}
svg .title{font-weight:bold}
svg rect.bar{fill:#4a7bb7}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}
.failures{color:#a00}
</style></head><body>
<h1>ephemera bench ${escapeHtml(run.suite)}${run.quick ? ' (quick)' : ''}</h1>
<p>${escapeHtml(`${run.passes} pass(es), targets ${run.targets.join(', ')}; ${run.startedAt} → ${run.finishedAt}; kernel ${run.host.kernel}, ${run.host.cpus} CPUs, ${run.host.memoryMiB} MiB`)}${run.stoppedBy ? ` — <b>stopped early: ${escapeHtml(run.stoppedBy)}</b>` : ''}</p>
<p>Bars are medians over passes; ratios are against tmpfs and overlay from the same run (&gt; 1 = better).</p>
<section id="charts">
${chartsFor(doc.summary).join('\n')}
</section>
<h2>Summary</h2>
${summaryTableHtml(doc.summary)}
${daemon.length ? `<h2>Daemon</h2><pre>${escapeHtml(daemon.join('\n'))}</pre>` : ''}
${failures.length ? `<h2>Failures</h2><pre class="failures">${escapeHtml(failures.join('\n'))}</pre>` : ''}
<script type="application/json" id="bench-data">${json}</script>
</body></html>
`;
}

export function writeReport(dir: string, doc: BenchJsonDocument): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'report.html');
  fs.writeFileSync(file, renderReportHtml(doc));
  return file;
}
