import { z } from 'zod';
import { BenchError, errorMessage } from './errors';
import { runProcess, tail } from './proc';

const MIB = 1024 * 1024;

export interface FioJob {
  name: string;
  rw: 'randwrite' | 'randread' | 'write' | 'read';
  blockSize: string;
  filename: string;
  sizeMiB: number;
  runtimeMs: number;
  /** fio's --invalidate: drop the file's page cache before the job (a cold read). */
  invalidate: boolean;
}

/** psync, one job, time based: the configuration every row of the design table was measured with. */
export function fioArgs(job: FioJob): string[] {
  return [
    `--name=${job.name}`,
    `--filename=${job.filename}`,
    `--size=${job.sizeMiB}M`,
    '--ioengine=psync',
    '--numjobs=1',
    `--rw=${job.rw}`,
    `--bs=${job.blockSize}`,
    '--time_based=1',
    `--runtime=${Math.max(1, Math.round(job.runtimeMs))}ms`,
    `--invalidate=${job.invalidate ? 1 : 0}`,
    '--output-format=json',
  ];
}

export interface FioFigures {
  iops: number;
  bw_mibs: number;
  /** Mean total latency (submission + completion) per I/O. */
  lat_us: number;
}

const FioDirection = z.object({
  io_bytes: z.number(),
  bw_bytes: z.number(),
  iops: z.number(),
  lat_ns: z.object({ mean: z.number() }),
});
const FioOutput = z.object({
  'fio version': z.string(),
  jobs: z
    .array(z.object({ jobname: z.string(), error: z.number(), read: FioDirection, write: FioDirection }))
    .min(1),
});

/**
 * Reads fio's --output-format=json. fio may print warnings before the JSON on stdout (e.g. "fio:
 * file hash not empty"), so parsing starts at the first line that opens an object. The direction
 * measured is the one that moved bytes; a job that moved none is an error, never a zero.
 */
export function parseFioOutput(stdout: string): FioFigures {
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new BenchError('E_FIO_OUTPUT', `fio printed no JSON: ${JSON.stringify(stdout.slice(0, 200))}`);
  let parsed;
  try {
    parsed = FioOutput.parse(JSON.parse(stdout.slice(start)));
  } catch (err) {
    throw new BenchError('E_FIO_OUTPUT', `fio JSON not understood: ${errorMessage(err)}`, { cause: err });
  }
  const job = parsed.jobs[0]!;
  if (job.error !== 0) throw new BenchError('E_FIO', `fio job ${job.jobname} failed with error ${job.error}`);
  const side = job.write.io_bytes >= job.read.io_bytes ? job.write : job.read;
  if (side.io_bytes <= 0) throw new BenchError('E_FIO_OUTPUT', `fio job ${job.jobname} moved no bytes`);
  return { iops: side.iops, bw_mibs: side.bw_bytes / MIB, lat_us: side.lat_ns.mean / 1000 };
}

export async function runFio(job: FioJob, signal: AbortSignal): Promise<FioFigures> {
  const args = fioArgs(job);
  let outcome;
  try {
    outcome = await runProcess('fio', args, { signal, timeoutMs: job.runtimeMs + 120_000, timeoutCode: 'E_FIO' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new BenchError('E_FIO', 'fio not found: install the Debian package fio (scripts/setup.sh does)', { cause: err });
    throw err;
  }
  if (outcome.exitCode !== 0)
    throw new BenchError('E_FIO', `fio ${job.name} exited ${outcome.exitCode ?? outcome.exitSignal}: ${tail(outcome.stderr || outcome.stdout)}`);
  return parseFioOutput(outcome.stdout);
}
