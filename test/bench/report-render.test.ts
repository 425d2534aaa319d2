import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchResult } from '../../bench/frame';
import { writeReport } from '../../bench/report';
import { toJsonDocument, type RunInfo } from '../../bench/summary';
import { impactRow } from './rows';

/** Opens the report in Debian's headless Chromium and checks what actually laid out. */
const CHROMIUM = '/usr/bin/chromium';

if (!existsSync(CHROMIUM)) process.stderr.write(`\n*** SKIPPING the report render test: ${CHROMIUM} is missing (apt-get install -y chromium; scripts/setup.sh does) ***\n\n`);

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function chromium(args: string[], profile: string): { stdout: string; status: number | null } {
  const r = spawnSync(
    CHROMIUM,
    ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`, ...args],
    { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 * 1024 * 1024 },
  );
  return { stdout: r.stdout, status: r.status };
}

const RUN: RunInfo = {
  suite: 'impact',
  quick: true,
  passes: 1,
  targets: ['ephemera', 'tmpfs', 'overlay'],
  startedAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:01:00.000Z',
  host: { kernel: '6.18', cpus: 2, memoryMiB: 24_000 },
};


const RESULTS: BenchResult[] = [
  ...[64, 128, 256].flatMap((limit) => [
    impactRow('ephemera', limit, 12 / (limit / 64), 0),
    impactRow('tmpfs', limit, limit === 64 ? undefined : 0.5, limit === 64 ? 2 : 0),
    impactRow('overlay', limit, 10 / (limit / 64), 0),
  ]),
  ...['ephemera', 'tmpfs', 'overlay'].map((target, i) => ({
    suite: 'impact',
    target,
    workload: 'mapreduce',
    parameters: { primary: 'seconds' },
    pass: 1,
    phase: 'warm' as const,
    figures: { seconds: 3 + i },
    oomKills: 0,
  })),
];

describe.skipIf(!existsSync(CHROMIUM))('report in headless Chromium', () => {
  it('renders every chart with its data points, OOM marks and the JSON behind them; SVG files beside it', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-report-render-'));
    dirs.push(dir);
    const doc = toJsonDocument(RESULTS, [], RUN);
    const file = writeReport(path.join(dir, 'out'), doc);
    const { stdout, status } = chromium(['--dump-dom', `file://${file}`], path.join(dir, 'profile'));
    expect(status).toBe(0);
    const body = /<body([^>]*)>/.exec(stdout)?.[1] ?? '';
    const attr = (name: string): number => Number(new RegExp(`${name}="(\\d+)"`).exec(body)?.[1] ?? NaN);
    // One line chart for the sweep, one bar chart for mapreduce, both laid out with data.
    expect(attr('data-charts')).toBe(2);
    expect(attr('data-charts-drawn')).toBe(2);
    // 8 sweep points (tmpfs at 64 MiB has none: it was killed) + 3 bars.
    expect(attr('data-marks')).toBe(11);
    expect(attr('data-oom-marks')).toBe(1);
    expect(attr('data-rows')).toBe(doc.summary.length);
    const svgs = readdirSync(path.join(dir, 'out', 'charts'));
    expect(svgs).toHaveLength(2);
    for (const svg of svgs) expect(readFileSync(path.join(dir, 'out', 'charts', svg), 'utf8')).toMatch(/^<\?xml[\s\S]*<svg xmlns="http:\/\/www.w3.org\/2000\/svg"[\s\S]*data-value=/);
    expect(JSON.parse(readFileSync(path.join(dir, 'out', 'impact.json'), 'utf8')).summary).toHaveLength(doc.summary.length);
  }, 120_000);

  it('lays its charts out across the page’s width, following the window, with the headline first', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-report-width-'));
    dirs.push(dir);
    const file = writeReport(path.join(dir, 'out'), toJsonDocument(RESULTS, [], RUN));
    const widths = [900, 1700].map((w, i) => {
      const { stdout, status } = chromium([`--window-size=${w},1000`, '--dump-dom', `file://${file}`], path.join(dir, `profile-${i}`));
      expect(status).toBe(0);
      expect(stdout).toMatch(/<body[^>]*>\s*<section id="headline">/);
      const body = /<body([^>]*)>/.exec(stdout)?.[1] ?? '';
      const attr = (name: string): number => Number(new RegExp(`${name}="(\\d+)"`).exec(body)?.[1] ?? NaN);
      return { body: attr('data-body-width'), chart: attr('data-chart-width') };
    });
    const [narrow, wide] = widths as [{ body: number; chart: number }, { body: number; chart: number }];
    // A narrow window: one column, each chart as wide as the page's body.
    expect(narrow.chart).toBeGreaterThanOrEqual(narrow.body - 2);
    // A wide one: the charts grow with it (one column, or two sharing the width), never a fixed size.
    expect(wide.body).toBeGreaterThan(narrow.body + 600);
    expect(wide.chart).toBeGreaterThan(wide.body * 0.45);
    expect(wide.chart).not.toBe(narrow.chart);
  }, 120_000);

  it('screenshots to a PNG', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-report-png-'));
    dirs.push(dir);
    const file = writeReport(path.join(dir, 'out'), toJsonDocument(RESULTS, [], RUN));
    const png = path.join(dir, 'report.png');
    const { status } = chromium([`--screenshot=${png}`, '--window-size=1200,1600', `file://${file}`], path.join(dir, 'profile'));
    expect(status).toBe(0);
    expect(readFileSync(png).subarray(1, 4).toString('latin1')).toBe('PNG');
    expect(statSync(png).size).toBeGreaterThan(10_000);
  }, 120_000);
});
