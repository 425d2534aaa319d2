import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_RECIPE, Engine, type FunctionContainer, type TmpMode } from '../../engine/index';
import { EphemeraTmpProvider } from '../../node/index';
import { cleanupNodeDaemon } from '../../fusefs/daemon';
import { DockerLimitWriter, InMemoryLimitWriter, managerLabels, TenantManager } from '../../manager/index';
import { MiB, parsePolicyConfig, type ContainerProfile } from '../../policy/index';
import { suiteSignal, throwIfAborted, type BenchResult, type Suite, type SuiteOptions } from '../frame';

/**
 * The thesis' mix (notes §8.5): a CPU container (300 MB, a busy shell loop standing in for the
 * thesis' big factorial: pure CPU, no memory to speak of) and an IO container (150 MB, two files of
 * 128 MB) of one tenant, run together: on an Ephemera /tmp with sharing (`ephemera`), without
 * (`ephemera-noshare`), and on Docker's overlay /tmp with no manager. Reported: both jobs' times,
 * OOM kills, the loaned MB (peak, mean, and over time as a line per variant). Then the
 * manager's decision latency per event with Docker excluded (in-memory limits, instant invocations)
 * at 200…1,000 events/s and 1…10 containers (thesis: ~6 µs; < 60 µs).
 */

const CPU_PROFILE: ContainerProfile = { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 };
const IO_PROFILE: ContainerProfile = { peakMemoryBytes: 2 * MiB, largestFileBytes: 256 * MiB };
const CPU_SCRIPT = 'i=0; while [ $i -lt $1 ]; do i=$((i+1)); done';
const IO_SCRIPT = 'for f in a b; do dd if=/dev/zero of=/tmp/$f bs=1M count=$1 2>/dev/null || exit 3; done; for r in $(seq $2); do cat /tmp/a /tmp/b >/dev/null; done; rm -f /tmp/a /tmp/b';

type Variant = 'ephemera' | 'ephemera-noshare' | 'overlay';
const VARIANTS: Variant[] = ['ephemera', 'ephemera-noshare', 'overlay'];

/** At most this many points of the loaned-MB-over-time line per run. */
const LOAN_SERIES_POINTS = 20;

/**
 * The loaned MB over time (sampled every 100 ms) as a sweep over `t_s`, one result per point, so the
 * report draws it as a line per variant: each point is the mean of its time bucket.
 */
function loanSeries(samples: ReadonlyArray<{ t: number; mb: number }>, variant: Variant, pass: number): BenchResult[] {
  if (samples.length === 0) return [];
  const span = samples[samples.length - 1]!.t;
  // Buckets in tenths of a second (the sampling period): a quick run of under a second still
  // draws a line, not one point.
  const bucketS = Math.max(0.1, Math.ceil((span / LOAN_SERIES_POINTS) * 10) / 10);
  const buckets = new Map<number, number[]>();
  for (const s of samples) {
    const t = Math.floor(s.t / bucketS) * bucketS;
    buckets.set(t, [...(buckets.get(t) ?? []), s.mb]);
  }
  return [...buckets].map(([t, mbs]) => ({
    suite: 'mix',
    target: variant,
    workload: 'loaned-over-time',
    parameters: { t_s: Math.round(t * 10) / 10 },
    pass,
    phase: 'n/a',
    figures: { loaned_mb: mbs.reduce((a, b) => a + b, 0) / mbs.length },
    oomKills: null,
  }));
}

async function runMix(engine: Engine, variant: Variant, pass: number, quick: boolean, stateDir: string, runLabel: Record<string, string>): Promise<BenchResult[]> {
  const tenant = `mix${pass}`;
  // The Ephemera variants' /tmp is a node-daemon mount per container (the engine's provider).
  const tmp: TmpMode = variant === 'overlay' ? { kind: 'overlay' } : { kind: 'bind' };
  const start = (fn: string, memoryMiB: number, profile: ContainerProfile, script: string): Promise<FunctionContainer> =>
    engine.start({ image: 'busybox', command: ['/bin/sh', '-c', script, fn], memoryMiB, tmp, tenant, function: fn, labels: { ...runLabel, ...managerLabels(memoryMiB * MiB, profile) } });
  const [cpu, io] = await Promise.all([start('cpu', 300, CPU_PROFILE, CPU_SCRIPT), start('io', 150, IO_PROFILE, IO_SCRIPT)]);
  let manager: TenantManager | undefined;
  const loaned: number[] = [];
  const series: Array<{ t: number; mb: number }> = [];
  let sampler: NodeJS.Timeout | undefined;
  try {
    const cpuArgs = [quick ? '300000' : '3000000'];
    const ioArgs = ['128', quick ? '2' : '20'];
    let cpuRun: Promise<{ wallMs: number; oomKills: number }>;
    let ioRun: Promise<{ wallMs: number; oomKills: number }>;
    if (variant === 'overlay') {
      cpuRun = cpu.invoke(cpuArgs);
      ioRun = io.invoke(ioArgs);
    } else {
      // The node daemon's state dir: the containers' mounts find this manager there and join its link.
      manager = await TenantManager.open({ tenant, stateDir, limitWriter: new DockerLimitWriter(engine.docker), policy: parsePolicyConfig({ pools: { sharing: variant === 'ephemera' } }) });
      for (const [fc, profile] of [[cpu, CPU_PROFILE], [io, IO_PROFILE]] as const) {
        await manager.addContainer({ id: fc.id, tenant, function: fc.spec.function, initialLimitBytes: fc.spec.memoryMiB * MiB, profile, invoker: fc, cgroupPath: fc.cgroupPath });
      }
      const m = manager;
      const t0 = performance.now();
      sampler = setInterval(() => {
        const mb = m.loanTable().reduce((s, l) => s + l.bytes, 0) / MiB;
        loaned.push(mb);
        series.push({ t: (performance.now() - t0) / 1000, mb });
      }, 100);
      cpuRun = m.invoke(cpu.id, cpuArgs);
      await m.idle();
      ioRun = m.invoke(io.id, ioArgs);
    }
    const [c, i] = await Promise.all([cpuRun, ioRun]);
    const run: BenchResult = {
      suite: 'mix',
      target: variant,
      workload: 'cpu+io',
      parameters: { tmp: variant === 'overlay' ? 'overlay' : 'ephemera', cpuIterations: cpuArgs[0]!, ioFileMiB: 128, ioReads: ioArgs[1]! },
      pass,
      phase: 'warm',
      figures: {
        io_s: i.wallMs / 1000,
        cpu_s: c.wallMs / 1000,
        loaned_mb_peak: loaned.length ? Math.max(...loaned) : 0,
        loaned_mb_mean: loaned.length ? loaned.reduce((s, v) => s + v, 0) / loaned.length : 0,
      },
      oomKills: c.oomKills + i.oomKills,
    };
    return [run, ...loanSeries(series, variant, pass)];
  } finally {
    if (sampler) clearInterval(sampler);
    await manager?.close();
    await Promise.all([cpu.remove(), io.remove()]);
  }
}

/** Decision latency per event (start or drain plan), Docker excluded, paced at `rate` events/s. */
async function decisionLatency(containers: number, rate: number, seconds: number, stateDir: string): Promise<BenchResult> {
  const writer = new InMemoryLimitWriter();
  const m = await TenantManager.open({ tenant: `bench${containers}x${rate}`, stateDir, listen: false, limitWriter: writer });
  const instant = { invoke: async () => ({ stdout: '', stderr: '', exitCode: 0, wallMs: 0, oomKills: 0 }) };
  const ids: string[] = [];
  for (let i = 0; i < containers; i++) {
    const id = `c${i}`;
    const harvest = i % 2 === 0;
    writer.limits.set(id, (harvest ? 300 : 150) * MiB);
    await m.addContainer({ id, tenant: m.tenant, initialLimitBytes: (harvest ? 300 : 150) * MiB, profile: harvest ? CPU_PROFILE : IO_PROFILE, invoker: instant });
    ids.push(id);
  }
  const total = Math.max(1, Math.round(rate * seconds));
  const t0 = performance.now();
  const pending: Promise<unknown>[] = [];
  for (let n = 0; n < total; n++) {
    const due = t0 + (n * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(m.invoke(ids[n % ids.length]!));
  }
  await Promise.all(pending);
  await m.idle();
  const h = await m.metrics.decisionSeconds.get();
  const sum = h.values.filter((v) => v.metricName === 'ephemera_manager_decision_seconds_sum').reduce((s, v) => s + v.value, 0);
  const count = h.values.filter((v) => v.metricName === 'ephemera_manager_decision_seconds_count').reduce((s, v) => s + v.value, 0);
  const elapsed = (performance.now() - t0) / 1000;
  await m.close();
  return {
    suite: 'mix',
    target: 'manager',
    workload: 'decision-latency',
    parameters: { containers, rate },
    pass: 1,
    phase: 'n/a',
    figures: { decision_us: count ? (sum / count) * 1e6 : 0, decisions: count, events_per_s: total / elapsed, limit_writes: writer.writes },
    oomKills: null,
  };
}

export const mixSuite: Suite = {
  name: 'mix',
  description: "the thesis' CPU+IO mix with sharing, without, and overlay; manager decision latency (Docker excluded)",
  defaultTimeCapS: { quick: 150, full: 1800 },
  async run(opts: SuiteOptions): Promise<BenchResult[]> {
    const { signal, dispose } = suiteSignal(opts, 'mix');
    const results: BenchResult[] = [];
    const stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-bench-mix-'));
    const runLabel = { 'ephemera.bench': `mix-${process.pid}` };
    let engine: Engine | undefined;
    let ephemeraEngine: Engine | undefined;
    let provider: EphemeraTmpProvider | undefined;
    try {
      const rates = opts.quick ? [200, 1000] : [200, 500, 1000];
      const counts = opts.quick ? [1, 10] : [1, 2, 5, 10];
      const variants = VARIANTS.filter((v) => !opts.targets || opts.targets.includes(v));
      const total = variants.length * opts.passes + rates.length * counts.length;
      let done = 0;
      for (const containers of counts) {
        for (const rate of rates) {
          throwIfAborted(signal);
          opts.progress?.({ done, total, label: `decision latency · ${containers} containers · ${rate}/s` });
          const r = await decisionLatency(containers, rate, opts.quick ? 1 : 5, stateDir);
          opts.log(`decision latency ${containers} containers @ ${rate}/s: ${r.figures.decision_us!.toFixed(1)} µs/event`);
          results.push(r);
          done += 1;
        }
      }
      engine = await Engine.connect();
      await engine.ensureImage(BUSYBOX_RECIPE);
      if (variants.some((v) => v !== 'overlay')) {
        provider = await EphemeraTmpProvider.start({ stateDir: path.join(stateDir, 'node') });
        ephemeraEngine = await Engine.connect({ tmpProvider: provider });
      }
      for (let pass = 1; pass <= opts.passes; pass++) {
        for (const variant of variants) {
          throwIfAborted(signal);
          opts.progress?.({ done, total, label: `pass ${pass} · ${variant} · cpu+io` });
          try {
            const [r, ...overTime] = await runMix(variant === 'overlay' ? engine : ephemeraEngine!, variant, pass, opts.quick, variant === 'overlay' ? stateDir : provider!.stateDir!, runLabel);
            opts.log(`${variant}: io ${r!.figures.io_s!.toFixed(2)} s, cpu ${r!.figures.cpu_s!.toFixed(2)} s, loaned peak ${r!.figures.loaned_mb_peak!.toFixed(0)} MB, oom ${r!.oomKills}`);
            results.push(r!, ...overTime);
          } catch (err) {
            const failure = { target: variant, pass, workload: 'cpu+io', code: (err as { code?: string }).code ?? 'E_MIX', message: (err as Error).message };
            if (!opts.onFailure) throw err;
            opts.onFailure(failure);
          }
          done += 1;
        }
      }
      return results;
    } finally {
      dispose();
      if (engine) await engine.removeManaged(runLabel).catch(() => undefined);
      if (provider) {
        await provider.close().catch(() => undefined);
        try {
          cleanupNodeDaemon(path.join(stateDir, 'node'));
        } catch {
          /* nothing left */
        }
      }
      await rm(stateDir, { recursive: true, force: true });
    }
  },
};
