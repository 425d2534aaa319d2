import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FunctionContainer } from '../../engine/index';
import { DockerLimitWriter, TenantManager } from '../../manager/index';
import { MiB, parsePolicyConfig, type ContainerProfile } from '../../policy/index';
import { benchLabels, measureInvocation, type InvocationOutcome } from '../container-suite';
import { openContainerTarget, type ContainerTarget } from '../container-targets';
import { BenchError, errorCode, errorMessage } from '../errors';
import { suiteSignal, throwIfAborted, type BenchResult, type Suite, type SuiteOptions } from '../frame';
import { createRunDir, removeRunDir } from '../host-targets';
import { EPH_WORK, ensurePayload, installPayload } from '../payload';
import { createLogger } from '../../log/index';

/**
 * Thesis 5.5: memory lending inside one tenant. Two IO instances (the impact function, 2 × 128 MiB
 * files at a 150 MiB limit) and two CPU instances (big_factorial at 300 MiB) run at once, every /tmp
 * an Ephemera mount. Configurations: no sharing (ephemera-noshare: no manager), and the tenant
 * manager lending with pool scope `function` (IO and CPU never share), `workflow` (each IO shares
 * with the CPU instance of its workflow) and `tenant` (all four share). Reported per instance kind:
 * latency, OOM kills and the limit the IO instances reached.
 */
export const SHARING_CONFIGS = ['none', 'function', 'workflow', 'tenant'] as const;
export type SharingConfig = (typeof SHARING_CONFIGS)[number];

export interface SharingConfigSizes {
  ioLimitMiB: number;
  cpuLimitMiB: number;
  /** Each IO instance writes two files of this size. */
  ioFileMiB: number;
  ioOps: number;
  /** big_factorial's n: the CPU instances must still run while the IO ones do, or nothing is lent. */
  cpuN: number;
}

export function sharingSizes(quick: boolean): SharingConfigSizes {
  return quick
    ? { ioLimitMiB: 150, cpuLimitMiB: 300, ioFileMiB: 128, ioOps: 5_000, cpuN: 1_500 }
    : { ioLimitMiB: 150, cpuLimitMiB: 300, ioFileMiB: 128, ioOps: 500_000, cpuN: 5_000 };
}

interface Instance {
  kind: 'io' | 'cpu';
  workflow: string;
  fc: FunctionContainer;
}


async function runConfig(
  config: SharingConfig,
  target: ContainerTarget,
  pass: number,
  quick: boolean,
  sizes: SharingConfigSizes,
  payload: string,
  labels: Record<string, string>,
  stateRoot: string,
  signal: AbortSignal,
): Promise<{ rows: BenchResult[]; failures: Array<{ workload: string; code: string; message: string }> }> {
  const { ioOps, cpuN, ioFileMiB: IO_FILE_MIB, ioLimitMiB: IO_LIMIT_MIB, cpuLimitMiB: CPU_LIMIT_MIB } = sizes;
  // The thesis' profiles (scheduler trace): IO 2 MB rss / 2 × F of files, CPU 4 MB / none.
  const IO_PROFILE: ContainerProfile = { peakMemoryBytes: 2 * MiB, largestFileBytes: 2 * IO_FILE_MIB * MiB };
  const CPU_PROFILE: ContainerProfile = { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 };
  const tenant = `bench-sharing-${config}`;
  const instances: Instance[] = [];
  let manager: TenantManager | undefined;
  const onAbort = (): void => {
    for (const i of instances) void i.fc.remove().catch(() => undefined);
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (const [kind, workflow] of [['io', 'wf-a'], ['io', 'wf-b'], ['cpu', 'wf-a'], ['cpu', 'wf-b']] as const) {
      throwIfAborted(signal);
      const fc = await target.engine.start({
        image: 'function',
        command: kind === 'io' ? [EPH_WORK, 'impact', '/tmp'] : [EPH_WORK, 'cpu'],
        memoryMiB: kind === 'io' ? IO_LIMIT_MIB : CPU_LIMIT_MIB,
        tmp: target.tmp,
        user: 'fn',
        tenant,
        function: kind,
        workflow,
        labels,
      });
      instances.push({ kind, workflow, fc });
      await installPayload(fc, payload);
    }
    if (config !== 'none') {
      manager = await TenantManager.open({
        tenant,
        // The node daemon's state dir: its mounts find this manager's socket and token there and
        // join the link, so a loan's return can evict the borrower's memory tier first.
        stateDir: target.ephemera?.stateDir ?? path.join(stateRoot, `manager-${config}-${pass}`),
        limitWriter: new DockerLimitWriter(target.engine.docker),
        policy: parsePolicyConfig({ pools: { scope: config } }, `sharing ${config}`),
        // Warnings (a loan that cannot be returned yet) go to stderr, not into the table on stdout.
        logger: createLogger('ephemera-bench', 'warn'),
      });
      for (const i of instances) {
        await manager.addContainer({
          id: i.fc.id,
          tenant,
          function: i.kind,
          workflow: i.workflow,
          initialLimitBytes: i.fc.spec.memoryMiB * MiB,
          profile: i.kind === 'io' ? IO_PROFILE : CPU_PROFILE,
          invoker: i.fc,
          cgroupPath: i.fc.cgroupPath,
        });
      }
    }
    const peakLimit = new Map<string, number>();
    const sampler = setInterval(() => {
      if (!manager) return;
      for (const i of instances) peakLimit.set(i.fc.id, Math.max(peakLimit.get(i.fc.id) ?? 0, manager.limitOf(i.fc.id)));
    }, 100);
    let outcomes: InvocationOutcome[];
    try {
      outcomes = await Promise.all(
        instances.map(async (i) => {
          const args = i.kind === 'io' ? [String(IO_FILE_MIB), String(ioOps)] : [String(cpuN)];
          const timeoutMs = quick ? 240_000 : 1_800_000;
          const m = manager;
          const what = `${i.kind} (${i.workflow}) ${args.join(' ')}`;
          // Through the manager when there is one, so the invocation opens and closes the loans.
          return measureInvocation(() => (m ? m.invoke(i.fc.id, args, { timeoutMs }) : i.fc.invoke(args, { timeoutMs })), what, i.fc);
        }),
      );
    } finally {
      clearInterval(sampler);
    }
    const failures = instances.flatMap((i, n) => {
      const f = outcomes[n]!.failure;
      return f ? [{ workload: `${i.kind} scope=${config}`, code: f.code, message: f.message }] : [];
    });
    const rows = instances.map((i, n) => {
      const o = outcomes[n]!;
      const figures = { ...o.figures, ...(manager && Object.keys(o.figures).length > 0 ? { peak_limit_mib: (peakLimit.get(i.fc.id) ?? 0) / MiB } : {}) };
      return {
        suite: 'sharing',
        target: target.name,
        workload: i.kind,
        parameters: { primary: 'seconds', scope: config, ...(i.kind === 'io' ? { file_mib: IO_FILE_MIB, ops: ioOps } : { n: cpuN }) },
        pass,
        phase: 'cold',
        figures,
        oomKills: o.oomKills,
      } satisfies BenchResult;
    });
    return { rows, failures };
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (manager) await manager.close().catch(() => undefined);
    await Promise.all(instances.map((i) => i.fc.remove().catch(() => undefined)));
  }
}

async function runSharing(opts: SuiteOptions, overrides: Partial<SharingConfigSizes>): Promise<BenchResult[]> {
  const sizes = { ...sharingSizes(opts.quick), ...overrides };
  const requested = opts.targets ?? ['ephemera', 'ephemera-noshare'];
  for (const t of requested)
    if (t !== 'ephemera' && t !== 'ephemera-noshare')
      throw new BenchError('E_UNKNOWN_TARGET', `the sharing suite compares lending scopes on Ephemera: targets ephemera (scopes function, workflow, tenant) and ephemera-noshare (no manager), not ${t}`);
  const configs: SharingConfig[] = [
    ...(requested.includes('ephemera-noshare') ? (['none'] as const) : []),
    ...(requested.includes('ephemera') ? (['function', 'workflow', 'tenant'] as const) : []),
  ];
  const { signal, dispose } = suiteSignal(opts, 'sharing');
  const results: BenchResult[] = [];
  const labels = benchLabels('sharing');
  let runDir: string | undefined;
  let stateRoot: string | undefined;
  const targets = new Map<string, ContainerTarget>();
  const total = opts.passes * configs.length;
  let done = 0;
  try {
    const payload = await ensurePayload(signal);
    runDir = createRunDir();
    stateRoot = await mkdtemp(path.join(os.tmpdir(), 'eph-bench-sharing-'));
    for (let pass = 1; pass <= opts.passes; pass++) {
      for (const config of configs) {
        throwIfAborted(signal);
        const targetName = config === 'none' ? 'ephemera-noshare' : 'ephemera';
        opts.progress?.({ done, total, label: `pass ${pass} · ${targetName} · scope ${config}` });
        try {
          let target = targets.get(targetName);
          if (!target) {
            target = await openContainerTarget(targetName, { runDir, log: opts.log });
            targets.set(targetName, target);
          }
          const { rows, failures } = await runConfig(config, target, pass, opts.quick, sizes, payload, labels, stateRoot, signal);
          results.push(...rows);
          for (const f of failures) {
            if (!opts.onFailure) throw new BenchError(f.code, `${targetName} ${f.workload}: ${f.message}`);
            opts.onFailure({ target: targetName, pass, ...f });
          }
        } catch (err) {
          if (signal.aborted) throw err;
          if (!opts.onFailure) throw err;
          opts.onFailure({ target: targetName, pass, workload: `scope=${config}`, code: errorCode(err), message: errorMessage(err) });
        }
        done++;
      }
    }
    opts.progress?.({ done, total, label: 'done' });
    return results;
  } catch (err) {
    const wrapped = err instanceof BenchError ? err : new BenchError(errorCode(err), errorMessage(err), { cause: err });
    wrapped.partial = results;
    throw wrapped;
  } finally {
    dispose();
    for (const t of targets.values()) for (const p of await t.close()) opts.log(`teardown: ${p}`);
    if (stateRoot) await rm(stateRoot, { recursive: true, force: true });
    if (runDir) for (const p of removeRunDir(runDir)) opts.log(`teardown: ${p}`);
  }
}

export function createSharingSuite(overrides: Partial<SharingConfigSizes> = {}): Suite {
  return {
    name: 'sharing',
    description: 'thesis 5.5: two IO + two CPU instances on Ephemera, no sharing vs tenant-manager lending with pool scope function, workflow, tenant',
    defaultTimeCapS: { quick: 420, full: 3600 },
    // One pass (each with two IO and two CPU instances): the no-sharing IO job alone takes ~3 min.
    defaultPasses: { quick: 1, full: 1 },
    run: (opts) => runSharing(opts, overrides),
  };
}

export const sharingSuite: Suite = createSharingSuite();
