import { Command, InvalidArgumentError, Option } from 'commander';
import { Engine } from './engine';
import { formatError } from '../errors/index';
import { EngineError, isEngineError } from './errors';
import { getRecipe, listEngineImages, listRecipes, recipeTag } from './images';
import type { TmpMode } from './spec';
import { ProfileStore, profileFunction } from './profile';
import type { TmpProvider } from './tmp-provider';

/**
 * Where `--tmp ephemera` gets its provider: the composition above the engine (node/) hands it in, as
 * the engine knows no node daemon. A provider on the daemon at `nodeSocket`, or on one started for
 * this command; `close` releases the provider and whatever was started for it.
 */
export type OpenEphemeraTmp = (nodeSocket: string | undefined) => Promise<{ provider: TmpProvider; close(): Promise<void> }>;

/** `ephemera` is a bind mount made by the Ephemera provider (a node daemon's mount per container). */
type TmpChoice = TmpMode | { kind: 'ephemera' };

function parseTmp(value: string): TmpChoice {
  if (value === 'ephemera') return { kind: 'ephemera' };
  if (value === 'overlay') return { kind: 'overlay' };
  if (value === 'tmpfs') return { kind: 'tmpfs' };
  const tmpfsSize = /^tmpfs:(\d+)$/.exec(value);
  if (tmpfsSize?.[1]) return { kind: 'tmpfs', sizeBytes: Number(tmpfsSize[1]) * 1024 * 1024 };
  if (value.startsWith('bind:') && value.length > 5) {
    const dir = value.slice(5);
    if (!dir.startsWith('/')) throw new InvalidArgumentError('bind:DIR needs an absolute DIR');
    return { kind: 'bind', hostPath: dir };
  }
  throw new InvalidArgumentError('expected ephemera, overlay, tmpfs, tmpfs:MiB or bind:/abs/dir');
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return n;
}

/** Prints an engine error with its code and sets a failing exit status instead of a stack trace. */
async function reportErrors(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (isEngineError(err)) {
      // A timed-out or dying invocation still has the output it produced until then.
      const partial = err.details?.result as { stdout?: string; stderr?: string } | undefined;
      if (partial?.stdout) process.stdout.write(partial.stdout);
      if (partial?.stderr) process.stderr.write(partial.stderr);
      process.stderr.write(`ephemera: ${formatError(err)}\n`);
      process.exitCode = err.code === 'E_TIMEOUT' ? 124 : 1;
      return;
    }
    throw err;
  }
}

/**
 * An engine for one command. `--tmp ephemera` gives each container a mount of a node daemon: the
 * one on `nodeSocket`, or one started for this command and cleaned up after it.
 */
async function withEngine<T>(
  openEphemeraTmp: OpenEphemeraTmp,
  choice: TmpChoice,
  nodeSocket: string | undefined,
  fn: (engine: Engine, tmp: TmpMode) => Promise<T>,
): Promise<T> {
  const ephemera = choice.kind === 'ephemera' ? await openEphemeraTmp(nodeSocket) : undefined;
  try {
    const tmp: TmpMode = choice.kind === 'ephemera' ? { kind: 'bind' } : choice;
    return await fn(await Engine.connect(ephemera ? { tmpProvider: ephemera.provider } : {}), tmp);
  } finally {
    await ephemera?.close();
  }
}

/** Registers this layer's `ephemera` subcommands; `--tmp ephemera` opens its provider with `openEphemeraTmp`. */
export function registerEngineCommands(program: Command, openEphemeraTmp: OpenEphemeraTmp): void {
  program
    .command('run')
    .description('run a command once in a new function container (cold) and remove it')
    .argument('<image>', 'image reference or recipe name (function, busybox)')
    .argument('<cmd...>', 'command and arguments (after --)')
    .option('--memory <MiB>', 'memory limit in MiB (no swap)', parsePositiveInt, 128)
    .option('--tmp <mode>', 'ephemera | overlay | tmpfs | tmpfs:MiB | bind:DIR', parseTmp, { kind: 'ephemera' } as TmpChoice)
    .option('--node-socket <path>', 'with --tmp ephemera: a running node daemon (default: start one for this run)')
    .option('--timeout <s>', 'kill the invocation after this many seconds', parseSeconds)
    .option('--user <user>', 'user the command runs as (e.g. fn)')
    .action(async (image: string, cmd: string[], opts: { memory: number; tmp: TmpChoice; nodeSocket?: string; timeout?: number; user?: string }) =>
      reportErrors(() =>
        withEngine(openEphemeraTmp, opts.tmp, opts.nodeSocket, async (engine, tmp) => {
          const recipe = getRecipe(image);
          if (recipe) await engine.ensureImage(recipe, { onProgress: (l) => process.stderr.write(`${l}\n`) });
          const result = await engine.invokeCold(
            { image, command: cmd, memoryMiB: opts.memory, tmp, ...(opts.user ? { user: opts.user } : {}) },
            [],
            opts.timeout === undefined ? {} : { timeoutMs: opts.timeout * 1000 },
          );
          process.stdout.write(result.stdout);
          process.stderr.write(result.stderr);
          process.stderr.write(
            `ephemera: exit ${result.exitCode}, ${result.wallMs} ms, ${result.oomKills} OOM kill(s), ` +
              `container ready in ${result.timings.readyMs} ms (create ${result.timings.createMs} ms)\n`,
          );
          process.exitCode = result.exitCode;
        }),
      ),
    );

  program
    .command('profile')
    .description('the profiling run (thesis 4.4.1): run the function once per input, store (limit, U, F) in the state dir')
    .argument('<image>', 'image reference or recipe name')
    .argument('<cmd...>', 'command (after --); each --input is appended to it')
    .requiredOption('--function <name>', 'function name (profile key is tenant/function)')
    .option('--tenant <name>', 'tenant', 'default')
    .option('--memory <MiB>', 'memory limit in MiB', parsePositiveInt, 128)
    .option('--tmp <mode>', 'ephemera (every file on the disk tier while profiled) | overlay | tmpfs | tmpfs:MiB | bind:DIR', parseTmp, { kind: 'ephemera' } as TmpChoice)
    .option('--node-socket <path>', 'with --tmp ephemera: a running node daemon (default: start one for this run)')
    .option('--input <args>', 'one representative input, space-separated (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--timeout <s>', 'per-input timeout in seconds', parseSeconds)
    .option('--user <user>', 'user the command runs as')
    .action(
      async (
        image: string,
        cmd: string[],
        opts: { function: string; tenant: string; memory: number; tmp: TmpChoice; nodeSocket?: string; input: string[]; timeout?: number; user?: string },
      ) =>
        reportErrors(() => withEngine(openEphemeraTmp, opts.tmp, opts.nodeSocket, async (engine, tmp) => {
          const recipe = getRecipe(image);
          if (recipe) await engine.ensureImage(recipe, { onProgress: (l) => process.stderr.write(`${l}\n`) });
          const inputs = opts.input.length > 0 ? opts.input.map((i) => i.split(/\s+/).filter(Boolean)) : [[]];
          const store = new ProfileStore();
          const { profile, runs } = await profileFunction(
            engine,
            {
              image,
              command: cmd,
              memoryMiB: opts.memory,
              tmp,
              tenant: opts.tenant,
              function: opts.function,
              ...(opts.user ? { user: opts.user } : {}),
            },
            inputs,
            { store, ...(opts.timeout === undefined ? {} : { timeoutMs: opts.timeout * 1000 }) },
          );
          for (const run of runs) {
            process.stderr.write(
              `input [${run.args.join(' ')}]: exit ${run.result.exitCode}, ${run.result.wallMs} ms, ` +
                `U ${(run.peakRssBytes / 1048576).toFixed(1)} MiB, F ${(run.largestFileBytes / 1048576).toFixed(1)} MiB\n`,
            );
          }
          process.stdout.write(`${JSON.stringify(profile)}\n`);
          process.stderr.write(`stored in ${store.file}\n`);
        })),
    );

  const images = program.command('images').description('function images built from Debian packages (no registry)');
  images
    .command('build')
    .description('build the images of the given recipes (all when none given); reuses an image whose recipe hash is present')
    .argument('[names...]', `recipe names (${listRecipes().map((r) => r.name).join(', ')})`)
    .addOption(new Option('--force', 'rebuild even when present'))
    .action(async (names: string[], opts: { force?: boolean }) =>
      reportErrors(async () => {
        const engine = await Engine.connect();
        const wanted = names.length > 0 ? names : listRecipes().map((r) => r.name);
        for (const name of wanted) {
          const recipe = getRecipe(name);
          if (!recipe) throw new EngineError('E_NO_IMAGE', `no recipe named ${name}`);
          const res = await engine.ensureImage(recipe, { force: opts.force ?? false, onProgress: (l) => process.stderr.write(`  ${l}\n`) });
          process.stdout.write(
            res.built ? `${res.tag}: built in ${(res.buildMs / 1000).toFixed(1)} s\n` : `${res.tag}: present, reused\n`,
          );
        }
      }),
    );
  images
    .command('ls')
    .description('list the recipes and the ephemera images present')
    .action(async () =>
      reportErrors(async () => {
        const engine = await Engine.connect();
        const present = await listEngineImages(engine.docker);
        for (const recipe of listRecipes()) {
          const tag = recipeTag(recipe);
          const img = present.find((p) => p.tag === tag);
          const state = img ? `present ${(img.sizeBytes / 1048576).toFixed(0)} MiB` : 'missing';
          process.stdout.write(`${recipe.name.padEnd(12)} ${tag.padEnd(36)} ${state}\n`);
        }
        for (const img of present.filter((p) => !listRecipes().some((r) => recipeTag(r) === p.tag))) {
          process.stdout.write(`${(img.recipe ?? '?').padEnd(12)} ${img.tag.padEnd(36)} stale recipe\n`);
        }
      }),
    );
}
