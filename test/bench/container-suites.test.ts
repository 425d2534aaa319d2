import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseWorkloadOutput } from '../../bench/container-suite';
import { checkContainerTargets, CONTAINER_TARGETS } from '../../bench/container-targets';
import { BenchError } from '../../bench/errors';
import type { BenchResult } from '../../bench/frame';
import { chartsFor, sweepPoint } from '../../bench/report';
import { functionbenchCases } from '../../bench/suites/functionbench';
import { impactCases, impactGrid } from '../../bench/suites/impact';
import { findSuite } from '../../bench/suites/index';
import { workloadsCases } from '../../bench/suites/workloads';
import { renderTable, summarize } from '../../bench/summary';

describe('parseWorkloadOutput', () => {
  it('takes the numeric fields of the last JSON object line, skipping chatter and non-numbers', () => {
    expect(parseWorkloadOutput('warming up\n{"seconds": 1.5, "name": "x", "n": 3}\n')).toEqual({ seconds: 1.5, n: 3 });
    expect(parseWorkloadOutput('{"seconds": 1}\n{"seconds": 2}\ntrailing words')).toEqual({ seconds: 2 });
    // The shell workloads print nanoseconds as an exponent.
    expect(parseWorkloadOutput('{"seconds": 1234567890e-9, "out_bytes": 10}')).toEqual({ seconds: 1.23456789, out_bytes: 10 });
  });

  it('refuses output without figures with E_WORKLOAD_OUTPUT', () => {
    for (const out of ['', 'Traceback (most recent call last)', '{"name": "x"}', '[1, 2]', '{broken']) {
      expect(() => parseWorkloadOutput(out)).toThrow(expect.objectContaining({ code: 'E_WORKLOAD_OUTPUT' }));
    }
  });

  it('returns exactly the finite numbers of any printed object', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ minLength: 1 }).filter((k) => k !== '__proto__'), fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string(), fc.boolean())), (obj) => {
        const numeric = Object.fromEntries(Object.entries(obj).filter(([, v]) => typeof v === 'number'));
        const line = JSON.stringify(obj);
        if (Object.keys(numeric).length === 0) expect(() => parseWorkloadOutput(line)).toThrow(BenchError);
        else expect(parseWorkloadOutput(`noise\n${line}`)).toEqual(JSON.parse(JSON.stringify(numeric)));
      }),
    );
  });
});

describe('container targets', () => {
  it('accepts the six names and refuses others with E_UNKNOWN_TARGET', () => {
    expect(checkContainerTargets([...CONTAINER_TARGETS], 'impact')).toEqual([...CONTAINER_TARGETS]);
    expect(() => checkContainerTargets(['tmpfs', 'ephemera-disk'], 'impact')).toThrow(expect.objectContaining({ code: 'E_UNKNOWN_TARGET' }));
  });

  it('every new suite is registered', () => {
    for (const name of ['fio', 'policy', 'schedule', 'mix', 'impact', 'functionbench', 'workloads', 'sharing', 'overhead', 'ordinary']) expect(findSuite(name)?.name).toBe(name);
  });
});

describe('suite grids', () => {
  it('impact: the thesis sweeps in full, three points per sweep and fewer ops in --quick', () => {
    const full = impactGrid(false);
    expect(full.filter((p) => p.sweep === 'limit_mib').map((p) => [p.limitMiB, p.fileMiB, p.ops])).toEqual([
      [32, 60, 500_000],
      [64, 60, 500_000],
      [128, 60, 500_000],
      [256, 60, 500_000],
    ]);
    expect(full.filter((p) => p.sweep === 'file_mib').map((p) => [p.limitMiB, p.fileMiB])).toEqual([
      [150, 32],
      [150, 64],
      [150, 128],
      [150, 160],
    ]);
    expect(full.filter((p) => p.sweep === 'ops').map((p) => [p.limitMiB, p.fileMiB, p.ops])).toEqual([
      [300, 128, 500],
      [300, 128, 5_000],
      [300, 128, 50_000],
      [300, 128, 500_000],
    ]);
    const quick = impactGrid(true);
    for (const sweep of ['limit_mib', 'file_mib', 'ops'] as const) expect(quick.filter((p) => p.sweep === sweep)).toHaveLength(3);
    for (const c of impactCases(true)) {
      expect(c.phases).toEqual(['cold', 'warm']);
      expect(c.argv.slice(1, 3)).toEqual(['impact', '/tmp']);
    }
  });

  it('functionbench and workloads: every case names a primary figure and works in /tmp', () => {
    for (const c of [...functionbenchCases(true), ...workloadsCases(true)]) {
      expect(c.parameters.primary).toBe('seconds');
      expect([...c.argv, ...(c.prepare ?? [])].join(' ')).toContain('/tmp');
    }
    expect(functionbenchCases(false).filter((c) => c.workload === 'huffman').map((c) => c.memoryMiB)).toEqual([64, 64, 64, 64, 64]);
    expect(workloadsCases(true).map((c) => c.workload)).toEqual(['image', 'mapreduce', 'ml-inference', 'video']);
  });
});

const row = (target: string, limit: number, phase: 'cold' | 'warm', seconds: number | undefined, oomKills: number): BenchResult => ({
  suite: 'impact',
  target,
  workload: 'impact-memory-limit',
  parameters: { primary: 'seconds', sweep: 'limit_mib', limit_mib: limit, file_mib: 60 },
  pass: 1,
  phase,
  figures: seconds === undefined ? {} : { seconds },
  oomKills,
});

describe('summary and charts of a sweep with OOM kills', () => {
  const results = [
    row('tmpfs', 64, 'cold', undefined, 1),
    row('overlay', 64, 'cold', 9, 0),
    row('ephemera', 64, 'cold', 3, 0),
    row('tmpfs', 64, 'warm', 1, 0),
    row('overlay', 64, 'warm', 8, 0),
    row('tmpfs', 256, 'cold', 1, 0),
    row('overlay', 256, 'cold', 2, 0),
    row('ephemera', 256, 'cold', 1.5, 0),
  ];
  const summary = summarize(results);

  it('keeps cold and warm apart, counts OOM kills and failed passes, takes ratios within a phase', () => {
    const eph64 = summary.find((r) => r.target === 'ephemera' && r.variant === 'limit_mib=64' && r.phase === 'cold')!;
    expect(eph64.vsOverlay).toBeCloseTo(3);
    expect(eph64.vsTmpfs).toBeNull(); // tmpfs produced no figure at 64 MiB cold: no ratio, not a fake one
    const tmpfs64 = summary.find((r) => r.target === 'tmpfs' && r.variant === 'limit_mib=64' && r.phase === 'cold')!;
    expect(tmpfs64).toMatchObject({ oomKills: 1, failedPasses: 1, passes: 0 });
    const tmpfsWarm = summary.find((r) => r.target === 'tmpfs' && r.phase === 'warm')!;
    expect(tmpfsWarm).toMatchObject({ oomKills: 0, passes: 1, medians: { seconds: 1 } });
    const table = renderTable(summary);
    expect(table.split('\n')[0]).toMatch(/OOM kills$/);
    expect(table).toMatch(/tmpfs\s+impact-memory-limit limit_mib=64 \(cold\)\s+—\s+0\s+1\s+—\s+—\s+1/);
  });

  it('draws each sweep phase as lines with the OOM kill marked', () => {
    expect(sweepPoint('limit_mib=64')).toEqual({ key: 'limit_mib', x: 64 });
    expect(sweepPoint('a=1 b=2')).toBeUndefined();
    expect(sweepPoint('')).toBeUndefined();
    const charts = chartsFor(summary);
    const cold = charts.find((c) => c.slug === 'impact-impact-memory-limit-cold')!;
    expect(cold.svg).toContain('class="chart sweep"');
    expect([...cold.svg.matchAll(/<circle[^>]*data-target="ephemera"[^>]*data-x="(\d+)"[^>]*data-value="([\d.]+)"/g)].map((m) => [Number(m[1]), Number(m[2])])).toEqual([
      [64, 3],
      [256, 1.5],
    ]);
    expect(cold.svg).toMatch(/data-target="tmpfs" data-oom="1"/);
  });
});

describe('the demo table', () => {
  const run = { suite: 'impact', quick: true, passes: 1, targets: [], startedAt: '', finishedAt: '', host: { kernel: '6.18', cpus: 2, memoryMiB: 1 } };

  it('shows time, ratios and OOM kills per target × workload, and says when a target was killed', async () => {
    const { toJsonDocument } = await import('../../bench/summary');
    const { renderCompactTable } = await import('../../bench/compact');
    const doc = toJsonDocument([row('tmpfs', 64, 'cold', undefined, 2), row('overlay', 64, 'cold', 9, 0), row('ephemera', 64, 'cold', 3, 0)], [], run);
    const lines = renderCompactTable([doc]).split('\n');
    expect(lines[0]).toMatch(/^suite\s+target\s+workload\s+time\s+vs tmpfs\s+vs overlay\s+OOM kills$/);
    expect(lines[1]).toMatch(/^impact\s+tmpfs\s+impact-memory-limit \(cold\)\s+OOM-killed\s+—\s+—\s+2$/);
    expect(lines[3]).toMatch(/^impact\s+ephemera\s+.*\s+3\.00 s\s+—\s+3\.00×\s+0$/);
    const md = renderCompactTable([doc], { markdown: true, targets: ['ephemera', 'tmpfs'] }).split('\n');
    expect(md[0]).toBe('| suite | target | workload | time | vs tmpfs | vs overlay | OOM kills |');
    expect(md[1]).toBe('|---|---|---|--:|--:|--:|--:|');
    expect(md.slice(2)).toEqual(['| impact | tmpfs | impact-memory-limit (cold) | OOM-killed | — | — | 2 |', '| impact | ephemera | impact-memory-limit (cold) | 3.00 s | — | 3.00× | 0 |']);
  });

  it('refuses a file that is not bench JSON with E_BAD_JSON', async () => {
    const { readBenchJson } = await import('../../bench/compact');
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eph-bench-json-'));
    try {
      fs.writeFileSync(path.join(dir, 'a.json'), '{"results": []}');
      fs.writeFileSync(path.join(dir, 'b.json'), 'not json');
      for (const f of ['a.json', 'b.json', 'missing.json']) expect(() => readBenchJson(path.join(dir, f))).toThrow(expect.objectContaining({ code: 'E_BAD_JSON' }));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
