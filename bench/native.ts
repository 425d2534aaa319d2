import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { BenchError, errorMessage } from './errors';
import { packageRoot, runProcess, tail } from './proc';

/**
 * Compiles bench/native/bench_io.c with the system cc at run time (no node-gyp: it is a plain
 * program, not an addon) into a cache keyed by the source's hash, and runs its modes.
 */
export async function ensureBenchIo(signal?: AbortSignal): Promise<string> {
  const source = path.join(packageRoot(), 'bench', 'native', 'bench_io.c');
  const text = fs.readFileSync(source);
  const key = createHash('sha256').update(text).digest('hex').slice(0, 16);
  const dir = path.join(os.tmpdir(), 'ephemera-bench-io', key);
  const binary = path.join(dir, 'bench_io');
  if (fs.existsSync(binary)) return binary;
  fs.mkdirSync(dir, { recursive: true });
  // Compiled under a private name then renamed, so concurrent runs never execute a half-written file.
  const partial = `${binary}.${process.pid}.tmp`;
  let outcome;
  try {
    outcome = await runProcess('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', partial, source], {
      signal,
      timeoutMs: 60_000,
      timeoutCode: 'E_CC',
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new BenchError('E_CC', 'cc not found: install build-essential (scripts/setup.sh does)', { cause: err });
    throw err;
  }
  if (outcome.exitCode !== 0) throw new BenchError('E_CC', `cc failed on ${source}: ${tail(outcome.stderr)}`);
  fs.renameSync(partial, binary);
  return binary;
}

const FreshOutput = z.object({ files: z.number().int().positive(), bytes: z.number().positive(), seconds: z.number().positive() });
const SmallOutput = z.object({
  files: z.number().int().positive(),
  create_seconds: z.number().positive(),
  unlink_seconds: z.number().nonnegative(),
});

export type FreshFileRun = z.infer<typeof FreshOutput>;
export type SmallFilesRun = z.infer<typeof SmallOutput>;

async function runBenchIo<T>(binary: string, args: string[], schema: z.ZodType<T>, signal: AbortSignal, timeoutMs: number): Promise<T> {
  const outcome = await runProcess(binary, args, { signal, timeoutMs, timeoutCode: 'E_BENCH_IO' });
  if (outcome.exitCode !== 0)
    throw new BenchError('E_BENCH_IO', `bench_io ${args[0]} failed (exit ${outcome.exitCode ?? outcome.exitSignal}): ${tail(outcome.stderr)}`);
  try {
    return schema.parse(JSON.parse(outcome.stdout.trim()));
  } catch (err) {
    throw new BenchError('E_BENCH_IO', `bench_io ${args[0]} printed unexpected output ${JSON.stringify(outcome.stdout.slice(0, 200))}: ${errorMessage(err)}`);
  }
}

/** Creates, writes `sizeMiB` and closes a fresh file, repeatedly, until `seconds` of timed work. */
export function runFreshFile(binary: string, dir: string, sizeMiB: number, seconds: number, signal: AbortSignal): Promise<FreshFileRun> {
  return runBenchIo(binary, ['fresh', dir, String(sizeMiB), String(seconds)], FreshOutput, signal, seconds * 1000 + 120_000);
}

/** `count` × (create + 4 KiB write + close), then `count` unlinks. */
export function runSmallFiles(binary: string, dir: string, count: number, signal: AbortSignal): Promise<SmallFilesRun> {
  return runBenchIo(binary, ['small', dir, String(count)], SmallOutput, signal, 300_000);
}

/** Writes a file of `sizeMiB` and leaves it, for memory probes. */
export async function writeKeptFile(binary: string, file: string, sizeMiB: number, signal: AbortSignal): Promise<void> {
  await runBenchIo(binary, ['keep', file, String(sizeMiB)], z.object({ bytes: z.number() }), signal, 120_000);
}
