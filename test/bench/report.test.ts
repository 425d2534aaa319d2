import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchResult } from '../../bench/frame';
import { renderReportHtml, writeReport } from '../../bench/report';
import { toJsonDocument, type RunInfo } from '../../bench/summary';

const r = (target: string, workload: string, pass: number, figures: Record<string, number>): BenchResult => ({
  suite: 'fio',
  target,
  workload,
  parameters: {},
  pass,
  phase: 'n/a',
  figures,
  oomKills: null,
});

const RUN: RunInfo = {
  suite: 'fio',
  quick: true,
  passes: 2,
  targets: ['tmpfs', 'overlay'],
  startedAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:01:00.000Z',
  host: { kernel: '6.18', cpus: 2, memoryMiB: 24_000 },
};

const RESULTS = [
  r('tmpfs', 'randwrite-4k', 1, { iops: 100 }),
  r('overlay', 'randwrite-4k', 1, { iops: 50 }),
  r('tmpfs', 'randwrite-4k', 2, { iops: 300 }),
  r('overlay', 'randwrite-4k', 2, { iops: 70 }),
  r('tmpfs', 'seqread-1m', 1, { bw_mibs: 4000 }),
  r('</script><b>x', 'seqread-1m', 1, { bw_mibs: 2000 }),
  r('ephemera', 'daemon-rss-idle', 1, { rss_mib: 2 }),
];

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('report.html', () => {
  const doc = toJsonDocument(RESULTS, [], RUN);
  const html = renderReportHtml(doc);

  it('draws one bar chart per workload, each bar the median of its target', () => {
    const charts = html.match(/<svg [^>]*class="chart"[\s\S]*?<\/svg>/g) ?? [];
    expect(charts).toHaveLength(2);
    const values = (svg: string) => [...svg.matchAll(/data-value="([^"]+)"/g)].map((m) => Number(m[1]));
    expect(values(charts[0]!)).toEqual([200, 60]);
    expect(charts[0]).toContain('0.30× tmpfs');
    expect(values(charts[1]!)).toEqual([4000, 2000]);
  });

  it('embeds the JSON it was drawn from, with "<" escaped so no name can close the script', () => {
    const match = /<script type="application\/json" id="bench-data">([\s\S]*?)<\/script>/.exec(html);
    expect(match).not.toBeNull();
    expect(match![1]).not.toContain('<');
    expect(JSON.parse(match![1]!)).toEqual(JSON.parse(JSON.stringify(doc)));
    expect(html).not.toContain('<b>x');
  });

  it('is written as DIR/report.html', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-report-'));
    dirs.push(dir);
    const file = writeReport(path.join(dir, 'nested'), doc);
    expect(file).toBe(path.join(dir, 'nested', 'report.html'));
    expect(readFileSync(file, 'utf8')).toBe(html);
  });
});
