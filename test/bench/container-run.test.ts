import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../engine/index';
import { createContainerSuite, type ContainerCase } from '../../bench/container-suite';
import type { BenchResult, SuiteOptions, TargetFailure } from '../../bench/frame';
import { mountsUnder } from '../../bench/host-targets';
import { EPH_WORK } from '../../bench/payload';
import { overheadSuite } from '../../bench/suites/overhead';
import { createSharingSuite } from '../../bench/suites/sharing';
import { workloadsCases } from '../../bench/suites/workloads';
import { WORKLOADS_RECIPE } from '../../bench/workloads-image';
import { ensureDocker } from '../support/docker';

/**
 * One short real run per new suite shape, in real containers on every target. Sizes are tiny: what
 * is checked is that each target runs the workload and reports figures and OOM kills, never speed.
 */
let engine: Engine | undefined;
let skipReason: string | undefined;
// A bench root of our own, so the leftover check sees only what this file made (others bench too).
mkdirSync(process.env.EPHEMERA_BENCH_ROOT ?? '/var/lib/ephemera-bench', { recursive: true });
const benchRoot = mkdtempSync(path.join(process.env.EPHEMERA_BENCH_ROOT ?? '/var/lib/ephemera-bench', `test-${process.pid}-`));
const previousRoot = process.env.EPHEMERA_BENCH_ROOT;
process.env.EPHEMERA_BENCH_ROOT = benchRoot;

beforeAll(async () => {
  ({ engine, skipReason } = await ensureDocker());
  if (engine) {
    await engine.ensureImage('function');
    // The workloads image takes minutes to build on a fresh machine (scripts/demo.sh builds it too).
    await engine.ensureImage(WORKLOADS_RECIPE);
  }
}, 20 * 60_000);

afterAll(async () => {
  if (previousRoot === undefined) delete process.env.EPHEMERA_BENCH_ROOT;
  else process.env.EPHEMERA_BENCH_ROOT = previousRoot;
  const mounted = mountsUnder(benchRoot);
  if (mounted.length === 0) rmSync(benchRoot, { recursive: true, force: true });
  expect(mounted).toEqual([]);
  if (!engine) return;
  // Every bench container carries an ephemera.bench label; none may be left behind.
  const left = await engine.docker.listContainers({ all: true, filters: JSON.stringify({ label: ['ephemera.bench'] }) });
  const ours = left.filter((c) => (c.Labels['ephemera.bench'] ?? '').includes(`-${process.pid}-`));
  expect(ours.map((c) => c.Names.join(','))).toEqual([]);
});

function options(targets: string[], failures: TargetFailure[]): SuiteOptions {
  return { quick: true, passes: 1, targets, timeCapS: 240, log: () => undefined, onFailure: (f) => failures.push(f) };
}

const tiny = (c: Partial<ContainerCase> & Pick<ContainerCase, 'workload' | 'argv' | 'memoryMiB'>): ContainerCase => ({
  parameters: { primary: 'seconds' },
  image: 'function',
  phases: ['cold', 'warm'],
  timeoutMs: 60_000,
  ...c,
});

describe.skipIf(process.env.EPHEMERA_SKIP_DOCKER === '1')('container suites on real containers', () => {
  it('runs the impact workload on every single-container target, cold then warm, and counts an OOM kill on tmpfs', async (ctx) => {
    if (!engine) return ctx.skip(skipReason);
    const suite = createContainerSuite({
      name: 'test-impact',
      description: '',
      defaultTimeCapS: { quick: 120, full: 120 },
      defaultTargets: [],
      images: ['function'],
      cases: () => [
        tiny({ workload: 'impact-small', argv: [EPH_WORK, 'impact', '/tmp', '4', '200'], memoryMiB: 64 }),
        // Two 40 MiB files cannot live in a 32 MiB tmpfs container: the kernel kills the writer.
        tiny({ workload: 'impact-oom', argv: [EPH_WORK, 'impact', '/tmp', '40', '100'], memoryMiB: 32, phases: ['cold'] }),
      ],
    });
    const failures: TargetFailure[] = [];
    const targets = ['ephemera', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'];
    const results = await suite.run(options(targets, failures));
    for (const target of targets) {
      for (const phase of ['cold', 'warm'] as const) {
        const r = results.find((x) => x.target === target && x.workload === 'impact-small' && x.phase === phase);
        expect(r, `${target} ${phase}`).toBeDefined();
        expect(r!.figures.seconds).toBeGreaterThan(0);
        expect(r!.figures.fill_s! + r!.figures.read_s! + r!.figures.write_s!).toBeCloseTo(r!.figures.seconds!, 3);
        expect(r!.oomKills).toBe(0);
        expect(r!.parameters.limit_mib).toBe(64);
      }
    }
    const tmpfsOom = results.find((x) => x.target === 'tmpfs' && x.workload === 'impact-oom')!;
    expect(tmpfsOom.oomKills).toBeGreaterThanOrEqual(1);
    expect(tmpfsOom.figures).toEqual({});
    expect(failures).toContainEqual(expect.objectContaining({ target: 'tmpfs', workload: 'impact-oom', code: 'E_OOM_KILLED' }));
    // Disk-backed /tmp pages are reclaimable cache: the same files survive 32 MiB there.
    const overlayOom = results.find((x) => x.target === 'overlay' && x.workload === 'impact-oom')!;
    expect(overlayOom.oomKills).toBe(0);
    expect(overlayOom.figures.seconds).toBeGreaterThan(0);
    expect(failures.filter((f) => f.workload === 'impact-small')).toEqual([]);
  }, 180_000);

  it('runs a workloads-image case with an untimed prepare step (video, 1 s clip)', async (ctx) => {
    if (!engine) return ctx.skip(skipReason);
    const video = workloadsCases(true).find((c) => c.workload === 'video')!;
    const suite = createContainerSuite({
      name: 'test-workloads',
      description: '',
      defaultTimeCapS: { quick: 120, full: 120 },
      defaultTargets: [],
      images: [WORKLOADS_RECIPE],
      cases: () => [{ ...video, prepare: [...video.prepare!.slice(0, -1), '1'], phases: ['cold'] }],
    });
    const failures: TargetFailure[] = [];
    const results = await suite.run(options(['tmpfs'], failures));
    expect(failures).toEqual([]);
    expect(results).toHaveLength(1);
    expect(results[0]!.figures.seconds).toBeGreaterThan(0);
    expect(results[0]!.figures.out_bytes).toBeGreaterThan(1000);
  }, 120_000);

  it('sharing: the four instances run under each pool scope through the tenant manager', async (ctx) => {
    if (!engine) return ctx.skip(skipReason);
    const suite = createSharingSuite({ ioLimitMiB: 64, cpuLimitMiB: 64, ioFileMiB: 8, ioOps: 200, cpuN: 20 });
    const failures: TargetFailure[] = [];
    const results: BenchResult[] = await suite.run(options(['ephemera'], failures));
    expect(failures).toEqual([]);
    for (const scope of ['function', 'workflow', 'tenant']) {
      const rows = results.filter((r) => r.parameters.scope === scope);
      expect(rows.map((r) => r.workload).sort()).toEqual(['cpu', 'cpu', 'io', 'io']);
      for (const r of rows) {
        expect(r.figures.seconds).toBeGreaterThan(0);
        expect(r.figures.peak_limit_mib).toBeGreaterThanOrEqual(64);
        expect(r.oomKills).toBe(0);
      }
    }
  }, 120_000);

  it('overhead: CPU-only and start time per target, RSS rows for daemon, manager, controller', async (ctx) => {
    if (!engine) return ctx.skip(skipReason);
    const failures: TargetFailure[] = [];
    const results = await overheadSuite.run(options(['ephemera', 'overlay'], failures));
    expect(failures).toEqual([]);
    for (const target of ['ephemera', 'overlay']) {
      expect(results.find((r) => r.target === target && r.workload === 'cpu-only' && r.phase === 'warm')?.figures.digits).toBeGreaterThan(100);
      expect(results.find((r) => r.target === target && r.workload === 'container-start')?.figures.start_ms).toBeGreaterThan(0);
    }
    const rss = results.filter((r) => r.workload.startsWith('daemon-rss-')).map((r) => r.workload);
    expect(rss).toEqual(['daemon-rss-idle', 'daemon-rss-per-mount', 'daemon-rss-manager', 'daemon-rss-controller']);
  }, 120_000);
});
