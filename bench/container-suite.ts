import * as os from 'node:os';
import { randomBytes } from 'node:crypto';
import { Engine, isEngineError, type FunctionContainer, type ImageRecipe, type InvocationResult } from '../engine/index';
import { SIZE_HINT_LABEL } from '../engine/index';
import { checkContainerTargets, openContainerTarget, type ContainerTarget, type ContainerTargetName } from './container-targets';
import { BenchError, errorCode, errorMessage } from './errors';
import { suiteSignal, throwIfAborted, type BenchResult, type Suite, type SuiteOptions } from './frame';
import { createRunDir, removeRunDir } from './host-targets';
import { ensurePayload, installPayload } from './payload';

/** One measured thing in a container suite: a container per (pass, target), one invocation per phase. */
export interface ContainerCase {
  workload: string;
  /** Stored with every row; a parameter that varies within a workload names a variant (a sweep point). */
  parameters: BenchResult['parameters'];
  /** A recipe name (`function`, `workloads`) or a Docker reference. */
  image: string;
  memoryMiB: number;
  /** Untimed, once per container before the invocations (input data generation). */
  prepare?: string[];
  /** What one invocation runs; its last JSON line on stdout gives the figures. */
  argv: string[];
  /** cold = the first invocation in a fresh container, warm = the next one in the same container. */
  phases: ReadonlyArray<'cold' | 'warm'>;
  timeoutMs: number;
  /** Adds the container's create → ready time (`start_ms`) to the cold row. */
  recordStart?: boolean;
  /**
   * The function's largest file, MiB: what its profiling run would record as F and the controller
   * hands the mount as its placement hint (new files straight to memory when 1.1 × F fits).
   */
  largestFileMiB?: number;
}

export interface ContainerSuiteDefinition {
  name: string;
  description: string;
  defaultTimeCapS: { quick: number; full: number };
  /** Passes when --passes is not given; default 1 for --quick, 3 for a full run. */
  defaultPasses?: { quick: number; full: number };
  defaultTargets: readonly ContainerTargetName[];
  /** Images the cases need, built (from Debian packages) before the first pass if missing. */
  images: ReadonlyArray<ImageRecipe | string>;
  cases(quick: boolean): ContainerCase[];
}

/**
 * The figures of one invocation: the last line of stdout that is a JSON object, numeric fields
 * only. Workload programs print exactly one such line; anything before it is their chatter.
 */
export function parseWorkloadOutput(stdout: string): Record<string, number> {
  const lines = stdout.trim().split('\n').reverse();
  for (const line of lines) {
    const text = line.trim();
    if (!text.startsWith('{')) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      continue;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) continue;
    const figures: Record<string, number> = {};
    for (const [k, v] of Object.entries(parsed)) if (typeof v === 'number' && Number.isFinite(v)) figures[k] = v;
    if (Object.keys(figures).length > 0) return figures;
  }
  throw new BenchError('E_WORKLOAD_OUTPUT', `no JSON figures in the workload's output: ${JSON.stringify(stdout.slice(-200))}`);
}

/** The invocation result an engine error carries (timeout, container died), if any. */
function resultOf(err: unknown): InvocationResult | undefined {
  if (!isEngineError(err)) return undefined;
  const r = err.details?.result;
  return typeof r === 'object' && r !== null ? (r as InvocationResult) : undefined;
}

export interface InvocationOutcome {
  figures: Record<string, number>;
  oomKills: number;
  /** Why the invocation produced no figures; undefined when it did. */
  failure?: { code: string; message: string };
}

/**
 * Runs one invocation (`run`: an exec, or a manager's invoke) and turns every way it can end (OOM
 * kill, timeout, death, garbage output) into an outcome; `what` names it in failure messages.
 */
export async function measureInvocation(run: () => Promise<InvocationResult>, what: string, fc?: FunctionContainer): Promise<InvocationOutcome> {
  let result: InvocationResult;
  try {
    result = await run();
  } catch (err) {
    const partial = resultOf(err);
    let oomKills = partial?.oomKills ?? 0;
    // A container whose init the OOM killer took is gone with its cgroup, so the counter cannot be
    // read after; dockerd's OOMKilled flag still tells (one kill at least).
    if (oomKills === 0 && isEngineError(err, 'E_CONTAINER_DIED') && fc) {
      const state = await fc.container.inspect().then((i) => i.State, () => undefined);
      if (state?.OOMKilled) oomKills = 1;
    }
    const code = oomKills > 0 ? 'E_OOM_KILLED' : errorCode(err);
    return { figures: {}, oomKills, failure: { code, message: errorMessage(err) } };
  }
  if (result.exitCode !== 0) {
    const code = result.oomKills > 0 ? 'E_OOM_KILLED' : 'E_WORKLOAD_FAILED';
    const why = result.oomKills > 0 ? `${result.oomKills} OOM kill(s) in the container's cgroup` : `exit ${result.exitCode}`;
    return { figures: {}, oomKills: result.oomKills, failure: { code, message: `${what}: ${why}: ${result.stderr.trim().slice(-300)}` } };
  }
  try {
    return { figures: { ...parseWorkloadOutput(result.stdout), invoke_s: result.wallMs / 1000 }, oomKills: result.oomKills };
  } catch (err) {
    return { figures: {}, oomKills: result.oomKills, failure: { code: errorCode(err), message: errorMessage(err) } };
  }
}

export function createContainerSuite(def: ContainerSuiteDefinition): Suite {
  return {
    name: def.name,
    description: def.description,
    defaultTimeCapS: def.defaultTimeCapS,
    // A container suite's --quick is a smoke run of the whole grid: one pass keeps it within minutes.
    defaultPasses: def.defaultPasses ?? { quick: 1, full: 3 },
    run: (opts) => runContainerSuite(def, opts),
  };
}

/** Labels on every container a suite starts, so a crashed run's leftovers can be found and removed. */
export function benchLabels(suite: string): Record<string, string> {
  return { 'ephemera.bench': `${suite}-${process.pid}-${randomBytes(3).toString('hex')}` };
}

/** A case's values a --case filter matches: its parameters, its workload and memory_mib. */
function caseValues(c: ContainerCase): Record<string, string> {
  const values: Record<string, string> = { workload: c.workload, memory_mib: String(c.memoryMiB) };
  for (const [k, v] of Object.entries(c.parameters)) values[k] = String(v);
  return values;
}

/** The cases matching one of `filters` (every pair of it); throws when a filter matches none. */
export function selectCases(cases: ContainerCase[], filters: Record<string, string>[] | undefined, suite: string): ContainerCase[] {
  if (!filters || filters.length === 0) return cases;
  const matches = (c: ContainerCase, f: Record<string, string>) => Object.entries(f).every(([k, v]) => caseValues(c)[k] === v);
  for (const f of filters) {
    if (!cases.some((c) => matches(c, f))) {
      const text = Object.entries(f).map(([k, v]) => `${k}=${v}`).join(',');
      throw new BenchError('E_BAD_OPTION', `--case ${text} matches no case of the ${suite} suite (keys: ${Object.keys(caseValues(cases[0]!)).join(', ')})`);
    }
  }
  return cases.filter((c) => filters.some((f) => matches(c, f)));
}

async function runContainerSuite(def: ContainerSuiteDefinition, opts: SuiteOptions): Promise<BenchResult[]> {
  const targetNames = checkContainerTargets(opts.targets ?? def.defaultTargets, def.name);
  if (!Number.isInteger(opts.passes) || opts.passes < 1) throw new BenchError('E_BAD_OPTION', `passes must be a positive integer, got ${opts.passes}`);
  const cases = selectCases(def.cases(opts.quick), opts.cases, def.name);
  const { signal, dispose } = suiteSignal(opts, def.name);
  const results: BenchResult[] = [];
  const labels = benchLabels(def.name);
  const total = opts.passes * cases.length * targetNames.length;
  let done = 0;
  const tick = (label: string): void => opts.progress?.({ done, total, label });
  const fail = (target: string, pass: number, code: string, message: string, workload?: string): void => {
    if (!opts.onFailure) throw new BenchError(code, `${target}${workload ? ` ${workload}` : ''}: ${message}`);
    opts.onFailure({ target, pass, workload, code, message });
  };
  const targets = new Map<ContainerTargetName, ContainerTarget>();
  const setupErrors = new Map<ContainerTargetName, { code: string; message: string }>();
  let runDir: string | undefined;
  let control: Engine | undefined;
  try {
    control = await Engine.connect();
    for (const image of def.images) {
      tick(`building image ${typeof image === 'string' ? image : image.name} (once)`);
      await control.ensureImage(image, { onProgress: (line) => opts.log(`image: ${line}`) });
    }
    const payload = await ensurePayload(signal);
    runDir = createRunDir();
    if (targetNames.includes('ephemera-noshare'))
      opts.log(`${def.name}: one container at a time, so nothing can be lent: ephemera-noshare (lending off) is the same setup as ephemera here`);
    for (const name of targetNames) {
      try {
        targets.set(name, await openContainerTarget(name, { runDir, log: opts.log }));
      } catch (err) {
        // The target stays in the run and fails every step, so it shows in the failures, not vanishes.
        setupErrors.set(name, { code: errorCode(err), message: errorMessage(err) });
        opts.log(`${def.name}: target ${name} could not be set up: ${errorMessage(err)}`);
      }
    }
    opts.log(`${def.name}: ${cases.length} case(s) × ${targetNames.length} target(s) × ${opts.passes} pass(es); run dir ${runDir}; ${os.cpus().length} CPUs`);
    for (let pass = 1; pass <= opts.passes; pass++) {
      for (const c of cases) {
        for (const name of targetNames) {
          throwIfAborted(signal);
          tick(`pass ${pass} · ${name} · ${c.workload} ${variantText(c)}`);
          const target = targets.get(name);
          if (!target) {
            const why = setupErrors.get(name)!;
            fail(name, pass, why.code, why.message, c.workload);
            done++;
            continue;
          }
          results.push(...(await runCase(def.name, target, c, pass, payload, labels, signal, fail)));
          done++;
        }
      }
    }
    tick('done');
    return results;
  } catch (err) {
    const wrapped = err instanceof BenchError ? err : new BenchError(errorCode(err), errorMessage(err), { cause: err });
    wrapped.partial = results;
    throw wrapped;
  } finally {
    dispose();
    if (control) await control.removeManaged(labels).catch(() => undefined);
    for (const target of targets.values()) for (const problem of await target.close()) opts.log(`teardown: ${problem}`);
    if (runDir) for (const problem of removeRunDir(runDir)) opts.log(`teardown: ${problem}`);
  }
}

function variantText(c: ContainerCase): string {
  const sweep = c.parameters.sweep;
  if (typeof sweep !== 'string') return '';
  return `${sweep}=${String(sweep === 'limit_mib' ? c.memoryMiB : c.parameters[sweep])}`;
}

async function runCase(
  suite: string,
  target: ContainerTarget,
  c: ContainerCase,
  pass: number,
  payload: string,
  labels: Record<string, string>,
  signal: AbortSignal,
  fail: (target: string, pass: number, code: string, message: string, workload?: string) => void,
): Promise<BenchResult[]> {
  const rows: BenchResult[] = [];
  let fc: FunctionContainer | undefined;
  let onAbort: (() => void) | undefined;
  try {
    fc = await target.engine.start({
      image: c.image,
      command: c.argv,
      memoryMiB: c.memoryMiB,
      tmp: target.tmp,
      user: 'fn',
      function: `${suite}-${c.workload}`.slice(0, 60),
      labels: c.largestFileMiB === undefined ? labels : { ...labels, [SIZE_HINT_LABEL]: String(c.largestFileMiB * 1024 * 1024) },
    });
    // An invocation in flight does not watch the signal: removing its container ends it at once.
    const started = fc;
    onAbort = () => void started.remove().catch(() => undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    await installPayload(fc, payload);
    if (c.prepare) {
      const prep = await measureInvocation(() => started.exec(c.prepare!, { timeoutMs: c.timeoutMs }), c.prepare.join(' '), started);
      if (prep.failure) {
        fail(target.name, pass, prep.failure.code, `prepare: ${prep.failure.message}`, c.workload);
        rows.push(row(suite, target, c, pass, 'cold', {}, prep.oomKills));
        return rows;
      }
    }
    for (const phase of c.phases) {
      throwIfAborted(signal);
      const outcome = await measureInvocation(() => started.exec(c.argv, { timeoutMs: c.timeoutMs }), c.argv.join(' '), started);
      // An abort removes the container under the invocation: that is the abort, not a target failure.
      throwIfAborted(signal);
      const figures = c.recordStart && phase === 'cold' && !outcome.failure ? { ...outcome.figures, start_ms: started.timings.readyMs } : outcome.figures;
      rows.push(row(suite, target, c, pass, phase, figures, outcome.oomKills));
      if (outcome.failure) fail(target.name, pass, outcome.failure.code, `${phase}: ${outcome.failure.message}`, c.workload);
      if (!(await fc.isRunning())) break;
    }
  } catch (err) {
    if (signal.aborted) throw err;
    fail(target.name, pass, errorCode(err), errorMessage(err), c.workload);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
    await fc?.remove().catch(() => undefined);
  }
  throwIfAborted(signal);
  return rows;
}

function row(
  suite: string,
  target: ContainerTarget,
  c: ContainerCase,
  pass: number,
  phase: 'cold' | 'warm',
  figures: Record<string, number>,
  oomKills: number,
): BenchResult {
  return {
    suite,
    target: target.name,
    workload: c.workload,
    parameters: { ...c.parameters, limit_mib: c.memoryMiB },
    pass,
    phase,
    figures,
    oomKills,
  };
}
