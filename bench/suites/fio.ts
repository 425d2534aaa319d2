import { probeNodeDaemonMemory } from '../node-daemon-memory';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BenchError, errorCode, errorMessage } from '../errors';
import { runFio, type FioJob } from '../fio';
import { suiteSignal, throwIfAborted, type BenchResult, type Suite, type SuiteOptions } from '../frame';
import { createRunDir, isHostTarget, readRssKiB, removeRunDir, setupHostTarget, type HostTarget } from '../host-targets';
import { ensureBenchIo, runFreshFile, runSmallFiles, writeKeptFile } from '../native';
import { runProcess, tail } from '../proc';
import { DAEMON_COUNTERS_WORKLOAD } from '../summary';

export interface FioSuiteConfig {
  /** The file every fio row works on. */
  fileMiB: number;
  /** Seconds per row: full and --quick. */
  runtimeS: number;
  quickRuntimeS: number;
  freshFileMiB: number;
  smallFiles: number;
  /** The file written before the second daemon RSS probe. */
  rssFileMiB: number;
  defaultTargets: string[];
  /** The directory the tree rows copy (a tar of it is extracted, diffed against it, removed). */
  treeSource: string;
  /** Names of the FIO_WORKLOADS rows to run (default: all). */
  workloads?: string[];
  /** Where run directories go (default: EPHEMERA_BENCH_ROOT or /var/lib/ephemera-bench). */
  benchRoot?: string;
  /** argv that starts the ephemera CLI (default: this node on the checkout's bin/ephemera.js). */
  ephemeraCommand?: string[];
}

export const DEFAULT_FIO_CONFIG: FioSuiteConfig = {
  fileMiB: 32,
  runtimeS: 8,
  quickRuntimeS: 2,
  freshFileMiB: 32,
  smallFiles: 10_000,
  rssFileMiB: 32,
  defaultTargets: ['ephemera', 'ephemera-disk', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'],
  treeSource: '/usr/include',
};

interface WorkloadContext {
  target: HostTarget;
  config: FioSuiteConfig;
  runtimeS: number;
  benchIo: string;
  signal: AbortSignal;
  tree: SourceTree;
}

/** The tree the tree rows extract, read and remove: a tar of `treeSource`, made once per run. */
interface SourceTree {
  source: string;
  tar: string;
  /** Entries in the tar (files, directories, links). */
  entries: number;
}

interface Workload {
  name: string;
  phase: BenchResult['phase'];
  parameters(ctx: WorkloadContext): BenchResult['parameters'];
  measure(ctx: WorkloadContext): Promise<Record<string, number>>;
}

function fioWorkload(name: string, rw: FioJob['rw'], blockSize: string, invalidate: boolean, phase: BenchResult['phase']): Workload {
  // Every fio row shares one file: the first row lays it out (fio does that before its clock
  // starts), the reads then find it written, as a function's /tmp would hold it.
  const job = (ctx: WorkloadContext): FioJob => ({
    name,
    rw,
    blockSize,
    invalidate,
    filename: path.join(ctx.target.dir, 'fio.dat'),
    sizeMiB: ctx.config.fileMiB,
    runtimeMs: ctx.runtimeS * 1000,
  });
  return {
    name,
    phase,
    parameters: (ctx) => ({ primary: blockSize === '4k' ? 'iops' : 'bw_mibs', tool: 'fio', ioengine: 'psync', numjobs: 1, rw, bs: blockSize, size_mib: ctx.config.fileMiB, runtime_s: ctx.runtimeS, invalidate }),
    measure: async (ctx) => ({ ...(await runFio(job(ctx), ctx.signal)) }),
  };
}

/** Where a target's copy of the tree lives; the rows after the extract find it there. */
const treeDir = (ctx: WorkloadContext): string => path.join(ctx.target.dir, 'tree');

/** Runs a tool to completion; anything but exit 0 fails the row with the tool's last lines. */
async function runTool(file: string, args: string[], signal: AbortSignal, what: string): Promise<string> {
  const out = await runProcess(file, args, { signal, timeoutMs: 600_000 });
  if (out.exitCode !== 0) throw new BenchError('E_WORKLOAD', `${what} exited ${out.exitCode ?? out.exitSignal}: ${tail(out.stderr || out.stdout, 3)}`);
  return out.stdout;
}

const extractTree = async (ctx: WorkloadContext): Promise<void> => {
  await runTool('tar', ['-xf', ctx.tree.tar, '-C', treeDir(ctx)], ctx.signal, `tar -xf on ${ctx.target.name}`);
};
/** An empty directory to extract into, made outside the timed part. */
const emptyTreeDir = async (ctx: WorkloadContext): Promise<void> => {
  fs.rmSync(treeDir(ctx), { recursive: true, force: true });
  fs.mkdirSync(treeDir(ctx));
};

/**
 * A metadata-heavy row over the source tree: seconds, entries per second and, on a daemon
 * target, the FUSE requests the row cost per entry (all opcodes, and each opcode that appeared),
 * read from the daemon's counters around the timed command.
 */
function treeWorkload(name: string, tool: string, prepare: (ctx: WorkloadContext) => Promise<void>, timed: (ctx: WorkloadContext) => Promise<void>): Workload {
  return {
    name,
    phase: 'n/a',
    parameters: (ctx) => ({ primary: 'seconds', tool, tree: ctx.config.treeSource, entries: ctx.tree.entries }),
    measure: async (ctx) => {
      await prepare(ctx);
      const before = await ctx.target.daemon?.counters(ctx.signal);
      const t0 = process.hrtime.bigint();
      await timed(ctx);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const after = await ctx.target.daemon?.counters(ctx.signal);
      const figures: Record<string, number> = { seconds, entries_per_s: ctx.tree.entries / seconds };
      if (before && after) {
        let total = 0;
        for (const [op, n] of Object.entries(after)) {
          const delta = n - (before[op] ?? 0);
          if (delta <= 0) continue;
          total += delta;
          figures[`rt_${op}_per_entry`] = delta / ctx.tree.entries;
        }
        figures.rt_per_entry = total / ctx.tree.entries;
      }
      return figures;
    },
  };
}

const ensureTree = async (ctx: WorkloadContext): Promise<void> => {
  if (fs.existsSync(treeDir(ctx))) return;
  await emptyTreeDir(ctx);
  await extractTree(ctx);
};

export const FIO_WORKLOADS: readonly Workload[] = [
  fioWorkload('randwrite-4k', 'randwrite', '4k', false, 'n/a'),
  fioWorkload('randread-4k-warm', 'randread', '4k', false, 'warm'),
  fioWorkload('randread-4k-cold', 'randread', '4k', true, 'cold'),
  fioWorkload('seqwrite-1m', 'write', '1m', false, 'n/a'),
  fioWorkload('seqread-1m', 'read', '1m', false, 'warm'),
  {
    name: 'fresh-file',
    phase: 'n/a',
    parameters: (ctx) => ({ primary: 'bw_mibs', tool: 'bench_io', size_mib: ctx.config.freshFileMiB, write_bs: '1m', runtime_s: ctx.runtimeS }),
    measure: async (ctx) => {
      const run = await runFreshFile(ctx.benchIo, ctx.target.dir, ctx.config.freshFileMiB, ctx.runtimeS, ctx.signal);
      return {
        bw_mibs: run.bytes / (1024 * 1024) / run.seconds,
        files_per_s: run.files / run.seconds,
        lat_us: (run.seconds / run.files) * 1e6,
      };
    },
  },
  {
    name: 'small-files',
    phase: 'n/a',
    parameters: (ctx) => ({ primary: 'files_per_s', tool: 'bench_io', files: ctx.config.smallFiles, file_bytes: 4096 }),
    measure: async (ctx) => {
      const run = await runSmallFiles(ctx.benchIo, ctx.target.dir, ctx.config.smallFiles, ctx.signal);
      return {
        files_per_s: run.files / (run.create_seconds + run.unlink_seconds),
        create_files_per_s: run.files / run.create_seconds,
      };
    },
  },
  // A tree extract, a tree read (every file compared with its source: a wrong byte fails the row)
  // and a tree removal, as a build or a package install in /tmp does them.
  treeWorkload('tree-extract', 'tar -xf', emptyTreeDir, extractTree),
  treeWorkload('tree-read', 'diff -r', ensureTree, async (ctx) => {
    await runTool('diff', ['-r', '--no-dereference', ctx.config.treeSource, path.join(treeDir(ctx), path.basename(ctx.config.treeSource))], ctx.signal, `diff -r on ${ctx.target.name}`);
  }),
  treeWorkload('tree-remove', 'rm -rf', ensureTree, async (ctx) => {
    await runTool('rm', ['-rf', treeDir(ctx)], ctx.signal, `rm -rf on ${ctx.target.name}`);
  }),
];

/** The fio suite on the host: every row on every target, targets interleaved pass by pass. */
export function createFioSuite(overrides: Partial<FioSuiteConfig> = {}): Suite {
  const config: FioSuiteConfig = { ...DEFAULT_FIO_CONFIG, ...overrides };
  return {
    name: 'fio',
    description: 'fio and create/unlink loops on host targets: 4 KiB random, 1 MiB sequential, fresh 32 MiB file, 10,000 small files, a tree extract, read and removal (/usr/include, FUSE round trips per entry), daemon RSS',
    defaultTimeCapS: { quick: 600, full: 1800 },
    run: (opts) => runFioSuite(config, opts),
  };
}

export const fioSuite: Suite = createFioSuite();

async function runFioSuite(config: FioSuiteConfig, opts: SuiteOptions): Promise<BenchResult[]> {
  const targets = opts.targets ?? config.defaultTargets;
  for (const t of targets) {
    if (!isHostTarget(t))
      throw new BenchError(
        'E_UNKNOWN_TARGET',
        t === 'ephemera-noshare'
          ? 'target ephemera-noshare exists only in container suites; the fio suite runs on the host'
          : `unknown target ${t} for the fio suite (host targets: ephemera, ephemera-disk, tmpfs, tmpfs-huge, overlay, disk)`,
      );
  }
  if (!Number.isInteger(opts.passes) || opts.passes < 1) throw new BenchError('E_BAD_OPTION', `passes must be a positive integer, got ${opts.passes}`);
  const runtimeS = opts.quick ? config.quickRuntimeS : config.runtimeS;
  const workloads = config.workloads ? FIO_WORKLOADS.filter((w) => config.workloads!.includes(w.name)) : FIO_WORKLOADS;
  const unknownWorkload = config.workloads?.find((name) => !FIO_WORKLOADS.some((w) => w.name === name));
  if (unknownWorkload) throw new BenchError('E_BAD_OPTION', `unknown fio workload ${unknownWorkload} (${FIO_WORKLOADS.map((w) => w.name).join(', ')})`);
  const { signal, dispose } = suiteSignal(opts, 'fio');
  const results: BenchResult[] = [];
  const stepsPerTarget = workloads.length + 1;
  const total = opts.passes * targets.length * stepsPerTarget;
  let done = 0;
  const tick = (label: string): void => opts.progress?.({ done, total, label });
  const fail = (target: string, pass: number, err: unknown, workload?: string): void => {
    const failure = { target, pass, workload, code: errorCode(err), message: errorMessage(err) };
    if (!opts.onFailure) throw err;
    opts.onFailure(failure);
  };
  let runDir: string | undefined;
  try {
    const benchIo = await ensureBenchIo(signal);
    runDir = createRunDir(config.benchRoot);
    const tree = workloads.some((w) => w.name.startsWith('tree-')) ? await packTree(config.treeSource, runDir, signal) : { source: config.treeSource, tar: '', entries: 0 };
    opts.log(`fio: run directory ${runDir}; ${runtimeS} s per row, ${opts.passes} pass(es), targets ${targets.join(', ')}`);
    for (let pass = 1; pass <= opts.passes; pass++) {
      for (const name of targets) {
        throwIfAborted(signal);
        tick(`pass ${pass} · ${name} · setup`);
        let target: HostTarget | undefined;
        const stepsBefore = done;
        try {
          target = await setupHostTarget(name, `${name}-p${pass}`, {
            runDir,
            signal,
            log: opts.log,
            ephemeraCommand: config.ephemeraCommand,
          });
          if (target.daemon) results.push(...(await probeDaemon(target, config, benchIo, pass, signal)));
          done++;
          const ctx: WorkloadContext = { target, config, runtimeS, benchIo, signal, tree };
          for (const workload of workloads) {
            throwIfAborted(signal);
            tick(`pass ${pass} · ${name} · ${workload.name}`);
            try {
              const figures = await workload.measure(ctx);
              results.push({
                suite: 'fio',
                target: name,
                workload: workload.name,
                parameters: { ...workload.parameters(ctx), ...(target.daemon ? { mode: target.daemon.mode } : {}) },
                pass,
                phase: workload.phase,
                figures,
                oomKills: null,
              });
            } catch (err) {
              if (signal.aborted) throw err;
              fail(name, pass, err, workload.name);
            }
            done++;
          }
        } catch (err) {
          if (signal.aborted) throw err;
          fail(name, pass, err);
          done = stepsBefore + stepsPerTarget;
        } finally {
          if (target) {
            const report = await target.teardown();
            if (report.counters)
              results.push({
                suite: 'fio',
                target: name,
                workload: DAEMON_COUNTERS_WORKLOAD,
                parameters: { mode: target.daemon?.mode ?? 'n/a' },
                pass,
                phase: 'n/a',
                figures: report.counters,
                oomKills: null,
              });
            for (const problem of report.problems) {
              opts.log(`teardown: ${problem}`);
              if (!signal.aborted) fail(name, pass, new BenchError('E_TARGET_TEARDOWN', problem));
            }
          }
        }
      }
    }
    // 100 mounts take ~30 s to make and tear down: a full run's measurement, not a quick one's.
    if (targets.includes('ephemera') && !config.workloads && !opts.quick) {
      tick('node daemon RSS with 1, 10, 100 idle mounts');
      try {
        results.push(...(await probeNodeDaemonMemory(runDir)));
      } catch (err) {
        if (signal.aborted) throw err;
        fail('ephemera', 1, err, 'node-daemon-rss');
      }
    }
    tick('done');
    return results;
  } catch (err) {
    if (err instanceof BenchError) err.partial = results;
    throw err;
  } finally {
    dispose();
    if (runDir) for (const problem of removeRunDir(runDir)) opts.log(`teardown: ${problem}`);
  }
}

/** VmRSS of the daemon idle, then holding one file of rssFileMiB (written, closed, kept open by nobody). */
async function probeDaemon(target: HostTarget, config: FioSuiteConfig, benchIo: string, pass: number, signal: AbortSignal): Promise<BenchResult[]> {
  const pid = target.daemon!.pid;
  const row = (workload: string, rssKiB: number): BenchResult => ({
    suite: 'fio',
    target: target.name,
    workload,
    parameters: { mode: target.daemon!.mode, ...(workload === 'daemon-rss-idle' ? {} : { file_mib: config.rssFileMiB }) },
    pass,
    phase: 'n/a',
    figures: { rss_mib: rssKiB / 1024 },
    oomKills: null,
  });
  const idle = row('daemon-rss-idle', readRssKiB(pid));
  const file = path.join(target.dir, 'rss-probe.dat');
  await writeKeptFile(benchIo, file, config.rssFileMiB, signal);
  const holding = row(`daemon-rss-${config.rssFileMiB}m`, readRssKiB(pid));
  fs.unlinkSync(file);
  return [idle, holding];
}

/** Packs `source` once per run (outside every target) so each extract reads the same archive. */
async function packTree(source: string, runDir: string, signal: AbortSignal): Promise<SourceTree> {
  if (!fs.existsSync(source)) throw new BenchError('E_BAD_OPTION', `the tree rows need ${source} (treeSource); it does not exist`);
  const tar = path.join(runDir, 'tree.tar');
  // -v lists each entry as it is packed: the count comes from the same pass.
  const listed = await runTool('tar', ['-cvf', tar, '-C', path.dirname(source), path.basename(source)], signal, `tar -cf ${source}`);
  const entries = listed.split('\n').filter((l) => l !== '').length;
  return { source, tar, entries };
}
