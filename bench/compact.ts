import * as fs from 'node:fs';
import { BenchError, errorMessage } from './errors';
import { formatFigure, rowLabel, DAEMON_WORKLOAD_PREFIX, type BenchJsonDocument } from './summary';

export interface CompactTableOptions {
  /** Only these targets (default: all). */
  targets?: readonly string[];
  /** A Markdown table (for README and notes) instead of aligned columns. */
  markdown?: boolean;
}

/**
 * The demo's table: one line per target × workload across suites, with the time (median of the
 * primary figure), the ratios to tmpfs and overlay from the same run, and OOM kills.
 */
export function renderCompactTable(docs: readonly BenchJsonDocument[], opts: CompactTableOptions = {}): string {
  const header = ['suite', 'target', 'workload', 'time', 'vs tmpfs', 'vs overlay', 'OOM kills'];
  const lines: string[][] = [header];
  for (const doc of docs) {
    for (const r of doc.summary) {
      if (r.workload.startsWith(DAEMON_WORKLOAD_PREFIX)) continue;
      if (opts.targets && !opts.targets.includes(r.target)) continue;
      const value = r.primary === undefined ? undefined : r.medians[r.primary];
      const unit = r.primary === 'seconds' ? ' s' : r.primary?.endsWith('_ms') ? ' ms' : r.primary ? ` ${r.primary}` : '';
      lines.push([
        r.suite,
        r.target,
        rowLabel(r),
        value === undefined ? ((r.oomKills ?? 0) > 0 ? 'OOM-killed' : r.failedPasses > 0 ? 'failed' : '—') : `${formatFigure(value)}${unit}`,
        r.vsTmpfs === null ? '—' : `${r.vsTmpfs.toFixed(2)}×`,
        r.vsOverlay === null ? '—' : `${r.vsOverlay.toFixed(2)}×`,
        r.oomKills === null ? '—' : String(r.oomKills),
      ]);
    }
  }
  if (opts.markdown) {
    const row = (l: readonly string[]) => `| ${l.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
    return [row(header), `|${header.map((_, c) => (c < 3 ? '---' : '--:')).join('|')}|`, ...lines.slice(1).map(row)].join('\n');
  }
  const widths = header.map((_, c) => Math.max(...lines.map((l) => [...l[c]!].length)));
  return lines.map((l) => l.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd()).join('\n');
}

/** Reads `--json` files written by `ephemera bench`; E_BAD_JSON when one is not such a file. */
export function readBenchJson(file: string): BenchJsonDocument {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new BenchError('E_BAD_JSON', `${file}: ${errorMessage(err)}`);
  }
  const doc = parsed as Partial<BenchJsonDocument> | null;
  if (!doc || !Array.isArray(doc.summary) || !Array.isArray(doc.results) || typeof doc.run !== 'object')
    throw new BenchError('E_BAD_JSON', `${file} is not the JSON of \`ephemera bench --json\` (needs results, summary, run)`);
  return doc as BenchJsonDocument;
}
