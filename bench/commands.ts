import { InvalidArgumentError, type Command } from 'commander';
import { readBenchJson, renderCompactTable } from './compact';
import { BenchError } from './errors';
import { headlineOfDocs, renderHeadline } from './headline';
import { runBench } from './runner';
import { SUITES, findSuite } from './suites';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number of seconds');
  return n;
}

function targetList(value: string): string[] {
  const list = value.split(',').map((t) => t.trim()).filter(Boolean);
  if (list.length === 0) throw new InvalidArgumentError('needs at least one target name');
  return list;
}

/** One --case: comma-separated key=value pairs, all of which a case must match; repeats add cases. */
function caseFilter(value: string, previous: Record<string, string>[]): Record<string, string>[] {
  const filter: Record<string, string> = {};
  for (const pair of value.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0 || eq === pair.length - 1) throw new InvalidArgumentError(`"${pair}" is not key=value`);
    filter[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  if (Object.keys(filter).length === 0) throw new InvalidArgumentError('needs at least one key=value');
  return [...previous, filter];
}

interface BenchCliOptions {
  quick: boolean;
  passes?: number;
  targets?: string[];
  case?: Record<string, string>[];
  json?: string;
  report?: string;
  timeCap?: number;
}

/** Registers `ephemera bench <suite>` and `ephemera bench list`. */
export function registerBenchCommands(program: Command): void {
  const bench = program
    .command('bench')
    .description('run a benchmark suite: medians over passes, ratios to tmpfs and overlay from the same run')
    .argument('<suite>', `suite to run (${SUITES.map((s) => s.name).join(', ')}; \`ephemera bench list\` describes them)`)
    .option('--quick', 'short runs (the whole set in under 10 minutes)', false)
    .option('--passes <n>', 'passes; targets interleave pass by pass (default: the suite’s own: 3 for most, 1 for impact, functionbench and sharing and for --quick container suites, so a full run of every suite stays under 2 hours)', positiveInt)
    .option('--targets <a,b>', 'comma-separated targets (default: the suite’s own list)', targetList)
    .option('--json <file>', 'write {"results":[…],"summary":[…],"failures":[…],"run":{…}}')
    .option('--report <dir>', 'write a self-contained report.html into DIR')
    .option('--time-cap <seconds>', 'stop the suite after this long (default: the suite’s own cap)', positiveSeconds)
    .option('--case <k=v,…>', 'container suites: only the cases whose parameters match all pairs (repeat for more), e.g. memory_mib=150,file_mib=128', caseFilter, [])
    .action(async (suiteName: string, opts: BenchCliOptions) => {
      const suite = findSuite(suiteName);
      if (!suite) throw new BenchError('E_UNKNOWN_SUITE', `unknown suite ${suiteName} (suites: ${SUITES.map((s) => s.name).join(', ')})`);
      const controller = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        process.stderr.write(`\n${sig}: stopping ${suite.name}, tearing targets down…\n`);
        controller.abort(new BenchError('E_INTERRUPTED', `${suite.name} interrupted by ${sig}`));
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const outcome = await runBench(suite, {
          quick: opts.quick,
          passes: opts.passes ?? (opts.quick ? suite.defaultPasses?.quick : suite.defaultPasses?.full) ?? 3,
          targets: opts.targets,
          ...(opts.case && opts.case.length > 0 ? { cases: opts.case } : {}),
          timeCapS: opts.timeCap,
          jsonFile: opts.json,
          reportDir: opts.report,
          signal: controller.signal,
          stdout: process.stdout,
          stderr: process.stderr,
        });
        process.exitCode = outcome.exitCode;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  bench
    .command('table')
    .description('one table (target × workload: time, ratios to tmpfs and overlay, OOM kills) from --json files')
    .argument('<json...>', 'files written by `ephemera bench <suite> --json FILE`')
    .option('--only <targets>', 'only these targets (comma-separated)')
    .option('--markdown', 'a Markdown table', false)
    .option('--headline', 'first the ten-second summary (Ephemera vs tmpfs and overlay, OOM kills avoided, reports); exit 1 if a step failed other than a baseline’s OOM kill', false)
    .action((files: string[], o: { only?: string; markdown: boolean; headline: boolean }) => {
      const targets = o.only?.split(',').map((t) => t.trim()).filter(Boolean);
      const docs = files.map(readBenchJson);
      if (o.headline) {
        const h = headlineOfDocs(docs);
        process.stdout.write(`${renderHeadline(h).join('\n')}\n\n`);
        if (h.failedSteps.length > 0) process.exitCode = 1;
      }
      process.stdout.write(`${renderCompactTable(docs, { markdown: o.markdown, ...(targets ? { targets } : {}) })}\n`);
    });
  bench
    .command('list')
    .description('list the benchmark suites')
    .action(() => {
      const width = Math.max(...SUITES.map((s) => s.name.length));
      for (const s of SUITES) process.stdout.write(`${s.name.padEnd(width)}  ${s.description}\n`);
    });
}
