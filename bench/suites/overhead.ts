import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Controller } from '../../controller/index';
import type { FunctionContainer } from '../../engine/index';
import { DockerLimitWriter, TenantManager } from '../../manager/index';
import { MiB } from '../../policy/index';
import { benchLabels, createContainerSuite, type ContainerCase } from '../container-suite';
import { openContainerTarget } from '../container-targets';
import { BenchError, errorCode, errorMessage } from '../errors';
import { suiteSignal, throwIfAborted, type BenchResult, type Suite, type SuiteOptions } from '../frame';
import { createRunDir, readRssKiB, removeRunDir } from '../host-targets';
import { EPH_WORK } from '../payload';

/**
 * What Ephemera costs when it brings nothing: a CPU-only function (big_factorial, no file I/O)
 * with and without an Ephemera /tmp (thesis: +1.29 %), the container start time per target, and
 * the resident memory the control plane adds: the node daemon per mount, a tenant manager with four
 * containers, the cluster controller. All three run in this process (the provider starts the node
 * daemon in-process), so their memory is measured as this process' VmRSS growth when each is added.
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

/** VmRSS growth of this process as the daemon gets MOUNTS mounts, a manager takes them, a controller starts. */
async function memoryRows(opts: SuiteOptions, pass: number, signal: AbortSignal): Promise<BenchResult[]> {
  const rows: BenchResult[] = [];
  const runDir = createRunDir();
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-bench-overhead-'));
  const labels = benchLabels('overhead');
  const containers: FunctionContainer[] = [];
  const selfRssMiB = (): number => readRssKiB(process.pid) / 1024;
  let controller: Controller | undefined;
  let manager: TenantManager | undefined;
  const before = selfRssMiB();
  const target = await openContainerTarget('ephemera', { runDir, log: opts.log });
  try {
    const idle = selfRssMiB();
    rows.push(rssRow('daemon-rss-idle', 'ephemera', pass, idle - before));
    for (let i = 0; i < MOUNTS; i++) {
      throwIfAborted(signal);
      containers.push(await target.engine.start({ image: 'function', command: ['/bin/true'], memoryMiB: 64, tmp: target.tmp, tenant: 'bench-overhead', function: `fn${i}`, labels }));
    }
    const withMounts = selfRssMiB();
    rows.push(rssRow('daemon-rss-per-mount', 'ephemera', pass, (withMounts - idle) / MOUNTS, { mounts: MOUNTS }));
    manager = await TenantManager.open({ tenant: 'bench-overhead', stateDir, limitWriter: new DockerLimitWriter(target.engine.docker), listen: false });
    for (const fc of containers)
      await manager.addContainer({ id: fc.id, tenant: 'bench-overhead', function: fc.spec.function, initialLimitBytes: 64 * MiB, profile: null, invoker: fc, cgroupPath: fc.cgroupPath });
    const withManager = selfRssMiB();
    rows.push(rssRow('daemon-rss-manager', 'ephemera', pass, withManager - withMounts, { containers: MOUNTS }));
    controller = await Controller.start({ stateDir: path.join(stateDir, 'controller'), port: 0, logger: pino({ level: 'silent' }) });
    rows.push(rssRow('daemon-rss-controller', 'ephemera', pass, selfRssMiB() - withManager));
    return rows;
  } finally {
    await controller?.close().catch(() => undefined);
    await manager?.close().catch(() => undefined);
    await Promise.all(containers.map((c) => c.remove().catch(() => undefined)));
    for (const p of await target.close()) opts.log(`teardown: ${p}`);
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
