import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchResult } from '../../bench/frame';
import { renderReportHtml, writeReport } from '../../bench/report';
import { toJsonDocument, type RunInfo } from '../../bench/summary';
import { impactRow } from './rows';

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

  it('opens with the headline: the body’s first element, above the title and every chart', () => {
    const body = html.slice(html.indexOf('<body>') + '<body>'.length).trimStart();
    expect(body.startsWith('<section id="headline">')).toBe(true);
    const section = /^<section id="headline">([\s\S]*?)<\/section>/.exec(body)![1]!;
    // No ephemera target in this run, so no ratio: the headline says so rather than hide the line.
    expect(section).toContain('<p>Ephemera: — tmpfs (no row with a ratio), — overlay (no row with a ratio); &#62; 1 = faster</p>');
    expect(section).toContain('<p>Ephemera OOM kills: 0</p>');
    expect(body.indexOf('</section>')).toBeLessThan(body.indexOf('<h1>'));
    expect(body.indexOf('</section>')).toBeLessThan(body.indexOf('<svg'));
  });

  it('shows Ephemera’s median ratios and the OOM kills avoided in the page’s headline', () => {
    const o = (target: string, seconds: number | undefined, oomKills: number) => impactRow(target, 64, seconds, oomKills);
    const page = renderReportHtml(toJsonDocument([o('ephemera', 4, 0), o('tmpfs', undefined, 3), o('overlay', 8, 0)], [], { ...RUN, suite: 'impact' }));
    const section = /<section id="headline">([\s\S]*?)<\/section>/.exec(page)![1]!;
    expect(section).toContain('Ephemera: — tmpfs (no row with a ratio), 2.00× overlay (median of 1 row)');
    expect(section).toContain('OOM kills avoided: 3 (tmpfs 3, overlay 0) in 1 row where Ephemera finished with 0');
  });

  it('draws its charts as wide as their column (width 100%, viewBox) in a grid across the page; the SVG files keep a size', () => {
    const charts = html.match(/<svg [^>]*>/g) ?? [];
    expect(charts.length).toBeGreaterThan(0);
    for (const open of charts) {
      expect(open).toContain('width="100%"');
      expect(open).toMatch(/viewBox="0 0 \d+ \d+"/);
      expect(open).not.toMatch(/ height="/);
    }
    const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
    expect(style).not.toMatch(/max-width/);
    expect(style).toMatch(/svg\.chart\{[^}]*width:100%;height:auto/);
    expect(style).toMatch(/#charts\{display:grid;grid-template-columns:repeat\(auto-fill,minmax\(min\(100%,\d+px\),1fr\)\)/);
    const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-report-svg-'));
    dirs.push(dir);
    writeReport(dir, doc);
    for (const file of readdirSync(path.join(dir, 'charts')))
      expect(readFileSync(path.join(dir, 'charts', file), 'utf8')).toMatch(/<svg [^>]*width="\d+" height="\d+" viewBox="0 0 \d+ \d+"/);
  });
});
