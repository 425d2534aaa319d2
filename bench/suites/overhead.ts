import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import { Engine, type FunctionContainer } from '../../engine/index';
import { EphemeraTmpProvider } from '../../node/index';
import { DockerLimitWriter, TenantManager } from '../../manager/index';
import { MiB } from '../../policy/index';
import { benchLabels, createContainerSuite, type ContainerCase } from '../container-suite';
import { BenchError, errorCode, errorMessage } from '../errors';
import { suiteSignal, throwIfAborted, type BenchResult, type Suite, type SuiteOptions } from '../frame';
import { createRunDir, mountsUnder, readRssKiB, removeRunDir } from '../host-targets';
import { packageRoot, runProcess } from '../proc';
import { EPH_WORK } from '../payload';
import { createLogger } from '../../log/index';

/**
 * What Ephemera costs when it brings nothing: a CPU-only function (big_factorial, no file I/O)
 * with and without an Ephemera /tmp (thesis: +1.29 %), the container start time per target, and
 * the resident memory the control plane adds: the node daemon idle and per mount, a tenant manager
 * with four containers, the cluster controller (see memoryRows for how each is measured).
 */
export function overheadCases(quick: boolean): ContainerCase[] {
  const n = quick ? 400 : 2_000;
  return [
    {
      workload: 'cpu-only',
      parameters: { primary: 'seconds', n },
      image: 'function',
      memoryMiB: 300,
      argv: [EPH_WORK, 'cpu', String(n)],
      phases: ['cold', 'warm'],
      timeoutMs: quick ? 120_000 : 600_000,
    },
    {
      workload: 'container-start',
      parameters: { primary: 'start_ms' },
      image: 'function',
      memoryMiB: 128,
      argv: ['/bin/sh', '-c', 'echo "{\\"noop\\": 1}"'],
      phases: ['cold'],
      timeoutMs: 60_000,
      recordStart: true,
    },
  ];
}

const timedPart = createContainerSuite({
  name: 'overhead',
  description: '',
  defaultTimeCapS: { quick: 300, full: 1200 },
  defaultTargets: ['ephemera', 'tmpfs', 'overlay'],
  images: ['function'],
  cases: overheadCases,
});

const MOUNTS = 4;

function rssRow(workload: string, target: string, pass: number, rssMiB: number, parameters: BenchResult['parameters'] = {}): BenchResult {
  return { suite: 'overhead', target, workload, parameters, pass, phase: 'n/a', figures: { rss_mib: rssMiB }, oomKills: null };
}

interface Child {
  pid: number;
  /** Resolves with the first stdout line (the ready line). */
  ready: Promise<string>;
  stop(): Promise<void>;
}

/** Starts `ephemera <args>` from this checkout as its own process, so its VmRSS is its own. */
function startCli(args: string[], log: (line: string) => void): Child {
  const child = spawn(process.execPath, [path.join(packageRoot(), 'bin', 'ephemera.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchError('E_TARGET_SETUP', `ephemera ${args[0]} not ready in 30 s: ${stderr.trim()}`)), 30_000);
    readline.createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new BenchError('E_TARGET_SETUP', `ephemera ${args[0]} exited ${code}: ${stderr.trim()}`));
    });
  });
  ready.catch(() => undefined);
  return {
    pid: child.pid ?? -1,
    ready,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        log(`overhead: ephemera ${args[0]} ignored SIGTERM for 10 s; killing it`);
        child.kill('SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Lets a fresh process settle (JIT, lazy allocations) before its VmRSS is read. */
async function settledRssMiB(pid: number): Promise<number> {
  await new Promise((r) => setTimeout(r, 1500));
  return readRssKiB(pid) / 1024;
}

/**
 * Resident memory of the control plane, each part in its own process where it runs as one: the
 * node daemon (`ephemera node-daemon`) idle and per mount (MOUNTS containers' /tmp), the cluster
 * controller (`ephemera controller`). The tenant manager lives inside the node process, so it is
 * measured as this process' VmRSS growth when one manages MOUNTS containers (method in parameters).
 */
async function memoryRows(opts: SuiteOptions, pass: number, signal: AbortSignal): Promise<BenchResult[]> {
  const rows: BenchResult[] = [];
  const runDir = createRunDir();
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-bench-overhead-'));
  const labels = benchLabels('overhead');
  const containers: FunctionContainer[] = [];
  const children: Child[] = [];
  let provider: EphemeraTmpProvider | undefined;
  let manager: TenantManager | undefined;
  try {
    const daemon = startCli(['node-daemon', '--state-dir', path.join(runDir, 'node'), '--json'], opts.log);
    children.push(daemon);
    const ready = JSON.parse(await daemon.ready) as { socket: string; pid: number };
    const idle = await settledRssMiB(ready.pid);
    rows.push(rssRow('daemon-rss-idle', 'ephemera', pass, idle, { method: 'process VmRSS' }));
    provider = await EphemeraTmpProvider.start({ socketPath: ready.socket });
    const engine = await Engine.connect({ tmpProvider: provider });
    for (let i = 0; i < MOUNTS; i++) {
      throwIfAborted(signal);
      containers.push(await engine.start({ image: 'function', command: ['/bin/true'], memoryMiB: 64, tmp: { kind: 'bind' }, tenant: 'bench-overhead', function: `fn${i}`, labels }));
    }
    const withMounts = await settledRssMiB(ready.pid);
    rows.push(rssRow('daemon-rss-per-mount', 'ephemera', pass, (withMounts - idle) / MOUNTS, { mounts: MOUNTS, method: 'process VmRSS growth / mounts' }));
    const beforeManager = readRssKiB(process.pid) / 1024;
    manager = await TenantManager.open({ tenant: 'bench-overhead', stateDir, limitWriter: new DockerLimitWriter(engine.docker), listen: false, logger: createLogger('ephemera-bench', 'warn') });
    for (const fc of containers)
      await manager.addContainer({ id: fc.id, tenant: 'bench-overhead', function: fc.spec.function, initialLimitBytes: 64 * MiB, profile: null, invoker: fc, cgroupPath: fc.cgroupPath });
    rows.push(rssRow('daemon-rss-manager', 'ephemera', pass, readRssKiB(process.pid) / 1024 - beforeManager, { containers: MOUNTS, method: 'in-process VmRSS growth' }));
    const controller = startCli(['controller', '--listen', '127.0.0.1:0', '--state-dir', path.join(stateDir, 'controller')], opts.log);
    children.push(controller);
    await controller.ready;
    rows.push(rssRow('daemon-rss-controller', 'ephemera', pass, await settledRssMiB(controller.pid), { method: 'process VmRSS' }));
    return rows;
  } finally {
    await manager?.close().catch(() => undefined);
    await Promise.all(containers.map((c) => c.remove().catch(() => undefined)));
    await provider?.close().catch(() => undefined);
    for (const c of children.reverse()) await c.stop();
    for (const m of mountsUnder(runDir).sort((a, b) => b.length - a.length)) await runProcess('umount', ['-l', m], { timeoutMs: 30_000 }).catch(() => undefined);
    for (const p of removeRunDir(runDir)) opts.log(`teardown: ${p}`);
    await rm(stateDir, { recursive: true, force: true });
  }
}

export const overheadSuite: Suite = {
  name: 'overhead',
  description: 'CPU-only function with and without Ephemera, container start time per target, RSS of daemon per mount, manager, controller',
  defaultTimeCapS: { quick: 300, full: 1200 },
  defaultPasses: { quick: 1, full: 3 },
  run: async (opts) => {
    const timed = await timedPart.run(opts);
    const { signal, dispose } = suiteSignal(opts, 'overhead');
    const results = [...timed];
    try {
      for (let pass = 1; pass <= opts.passes; pass++) {
        opts.progress?.({ done: pass - 1, total: opts.passes, label: `pass ${pass} · memory of daemon, manager, controller` });
        try {
          results.push(...(await memoryRows(opts, pass, signal)));
        } catch (err) {
          if (signal.aborted || !opts.onFailure) throw err;
          opts.onFailure({ target: 'ephemera', pass, workload: 'memory', code: errorCode(err), message: errorMessage(err) });
        }
      }
      return results;
    } catch (err) {
      const wrapped = err instanceof BenchError ? err : new BenchError(errorCode(err), errorMessage(err), { cause: err });
      wrapped.partial = results;
      throw wrapped;
    } finally {
      dispose();
    }
  },
};
