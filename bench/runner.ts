import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MultiBar, Presets } from 'cli-progress';
import { formatError } from '../errors/index';
import { BenchError } from './errors';
import type { BenchResult, ProgressTick, Suite, TargetFailure } from './frame';
import { reportPath, writeReport } from './report';
import { renderDaemonLines, renderTable, toJsonDocument, type BenchJsonDocument } from './summary';

export interface BenchRunOptions {
  quick: boolean;
  passes: number;
  targets?: string[];
  /** Only these cases (SuiteOptions.cases). */
  cases?: Record<string, string>[];
  /** Overrides the suite's default cap. */
  timeCapS?: number;
  jsonFile?: string;
  reportDir?: string;
  signal?: AbortSignal;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface BenchRunOutcome {
  doc: BenchJsonDocument;
  /** 0 clean; 1 a target failed or the time cap hit; 130 interrupted. */
  exitCode: number;
  reportFile?: string;
}

/** Progress on stderr: a cli-progress bar on a terminal, one line per step otherwise (CI logs). */
function progressReporter(stderr: BenchRunOptions['stderr']): {
  tick: (t: ProgressTick) => void;
  log: (line: string) => void;
  stop: () => void;
} {
  if (stderr.isTTY) {
    const multi = new MultiBar(
      { stream: stderr, format: '{bar} {value}/{total} {label} | {duration_formatted}', hideCursor: true, clearOnComplete: false },
      Presets.shades_classic,
    );
    const bar = multi.create(1, 0, { label: 'starting' });
    return {
      tick: (t) => {
        bar.setTotal(t.total);
        bar.update(t.done, { label: t.label });
      },
      log: (line) => multi.log(`${line}\n`),
      stop: () => multi.stop(),
    };
  }
  return {
    tick: (t) => stderr.write(`[${t.done}/${t.total}] ${t.label}\n`),
    log: (line) => stderr.write(`${line}\n`),
    stop: () => undefined,
  };
}

/** Runs one suite in the frame: progress, failures, time cap, then the table, the JSON and the report. */
export async function runBench(suite: Suite, options: BenchRunOptions): Promise<BenchRunOutcome> {
  if (!Number.isInteger(options.passes) || options.passes < 1)
    throw new BenchError('E_BAD_OPTION', `--passes must be a positive integer, got ${options.passes}`);
  const timeCapS = options.timeCapS ?? (options.quick ? suite.defaultTimeCapS?.quick : suite.defaultTimeCapS?.full) ?? 3600;
  if (!(timeCapS > 0)) throw new BenchError('E_BAD_OPTION', `--time-cap must be a positive number of seconds, got ${timeCapS}`);
  const startedAt = new Date().toISOString();
  const failures: TargetFailure[] = [];
  const progress = progressReporter(options.stderr);
  let results: BenchResult[];
  let stoppedBy: BenchError | undefined;
  try {
    results = await suite.run({
      quick: options.quick,
      passes: options.passes,
      targets: options.targets,
      ...(options.cases ? { cases: options.cases } : {}),
      timeCapS,
      log: progress.log,
      signal: options.signal,
      progress: progress.tick,
      onFailure: (f) => {
        failures.push(f);
        progress.log(`FAILED ${f.target} pass ${f.pass}${f.workload ? ` ${f.workload}` : ''}: ${f.code}: ${f.message}`);
      },
    });
  } catch (err) {
    if (!(err instanceof BenchError && (err.code === 'E_TIME_CAP' || err.code === 'E_INTERRUPTED'))) throw err;
    stoppedBy = err;
    results = err.partial;
  } finally {
    progress.stop();
  }
  const doc = toJsonDocument(results, failures, {
    suite: suite.name,
    quick: options.quick,
    passes: options.passes,
    targets: options.targets ?? [...new Set(results.map((r) => r.target))],
    startedAt,
    finishedAt: new Date().toISOString(),
    host: { kernel: os.release(), cpus: os.cpus().length, memoryMiB: Math.round(os.totalmem() / 2 ** 20) },
    ...(stoppedBy ? { stoppedBy: formatError(stoppedBy) } : {}),
    ...(options.reportDir ? { report: reportPath(options.reportDir) } : {}),
  });
  options.stdout.write(`${renderTable(doc.summary)}\n`);
  for (const line of renderDaemonLines(doc.results, doc.summary)) options.stdout.write(`${line}\n`);
  if (options.jsonFile) {
    fs.mkdirSync(path.dirname(path.resolve(options.jsonFile)), { recursive: true });
    fs.writeFileSync(options.jsonFile, `${JSON.stringify(doc, null, 2)}\n`);
  }
  const reportFile = options.reportDir ? writeReport(options.reportDir, doc) : undefined;
  if (reportFile) options.stderr.write(`report: ${reportFile}\n`);
  if (failures.length > 0) {
    const distinct = [...new Set(failures.map((f) => `${f.target}${f.workload ? ` ${f.workload}` : ''}: ${f.code}: ${f.message}`))];
    options.stderr.write(`${failures.length} failure(s):\n${distinct.map((d) => `  ${d}`).join('\n')}\n`);
  }
  if (stoppedBy) options.stderr.write(`stopped early (${stoppedBy.code}): ${stoppedBy.message}; partial results above\n`);
  const exitCode = stoppedBy ? stoppedBy.exitCode : failures.length > 0 ? 1 : 0;
  return { doc, exitCode, reportFile };
}
