import { lstat, readFile, readdir } from 'node:fs/promises';
import { writeFileAtomic } from './atomic-file';
import path from 'node:path';
import type { Engine, FunctionContainer, InvocationResult, InvokeOptions } from './engine';
import { parseFunctionSpec, type FunctionSpecInput } from './spec';
import { readMemoryStat } from './cgroup';
import { Worker } from 'node:worker_threads';
import { defaultStateDir } from './config';
import { EngineError, errorMessage } from './errors';

/** The profile of thesis 4.4.1: the limit, the peak native memory U and the largest /tmp file F. */
export interface FunctionProfile {
  /** `tenant/function`. */
  key: string;
  image: string;
  command: string[];
  limitBytes: number;
  /** Peak rss of the container's memory cgroup (no page cache, no shmem), max over the inputs. */
  peakRssBytes: number;
  /** Largest regular file left under /tmp by one invocation, max over the inputs. */
  largestFileBytes: number;
  inputs: number;
  sampleIntervalMs: number;
  samples: number;
  profiledAt: string;
}

export interface ProfileRunOptions extends InvokeOptions {
  /** Sampling period of `memory.stat`; 5 ms by default. */
  sampleIntervalMs?: number;
  /** Where the profile is stored; no store means the profile is only returned. */
  store?: ProfileStore;
}

export interface ProfileInputRun {
  args: string[];
  result: InvocationResult;
  peakRssBytes: number;
  largestFileBytes: number;
}

/**
 * Runs the function once per input, each in a fresh container created with `profiling: true`
 * (so an Ephemera provider puts every file on the disk tier and the memory seen is the function's
 * own), sampling `total_rss` and measuring the largest file it left in /tmp.
 */
export async function profileFunction(
  engine: Engine,
  specInput: FunctionSpecInput,
  inputs: string[][],
  options: ProfileRunOptions = {},
): Promise<{ profile: FunctionProfile; runs: ProfileInputRun[] }> {
  const spec = parseFunctionSpec(specInput);
  if (inputs.length === 0) throw new EngineError('E_BAD_SPEC', 'profiling needs at least one input');
  const interval = options.sampleIntervalMs ?? 5;
  const runs: ProfileInputRun[] = [];
  let samples = 0;
  for (const args of inputs) {
    const fc = await engine.start(spec, { profiling: true });
    try {
      const sampler = await startRssSampler(fc.cgroupPath, interval);
      let result: InvocationResult;
      let sampled: { peak: number; samples: number };
      try {
        result = await fc.invoke(args, options);
      } finally {
        sampled = await sampler.stop();
      }
      samples += sampled.samples;
      const largestFileBytes = await largestTmpFile(fc);
      runs.push({ args, result, peakRssBytes: sampled.peak, largestFileBytes });
    } finally {
      await fc.remove();
    }
  }
  const profile: FunctionProfile = {
    key: profileKey(spec.tenant, spec.function),
    image: spec.image,
    command: spec.command,
    limitBytes: spec.memoryMiB * 1024 * 1024,
    peakRssBytes: Math.max(...runs.map((r) => r.peakRssBytes)),
    largestFileBytes: Math.max(...runs.map((r) => r.largestFileBytes)),
    inputs: inputs.length,
    sampleIntervalMs: interval,
    samples,
    profiledAt: new Date().toISOString(),
  };
  if (options.store) await options.store.put(profile);
  return { profile, runs };
}

export function profileKey(tenant: string, fn: string): string {
  return `${tenant}/${fn}`;
}

interface RssSampler {
  /** Stops sampling (one last sample first); the peak rss and how many samples were taken. */
  stop(): Promise<{ peak: number; samples: number }>;
}

/**
 * The sampler runs in its own thread with a synchronous read loop, so its cadence does not depend
 * on how busy the main event loop is (demuxing output, other containers): under load a timer-driven
 * sampler on the main thread missed short peaks.
 */
const SAMPLER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const { file, field, intervalMs, stopFlag } = workerData;
const stop = new Int32Array(stopFlag);
const pattern = new RegExp('^' + field + ' (\\\\d+)$', 'm');
let peak = 0;
let samples = 0;
const sample = () => {
  try {
    const m = pattern.exec(readFileSync(file, 'utf8'));
    if (m) { samples++; const v = Number(m[1]); if (v > peak) peak = v; }
  } catch {}
};
sample();
parentPort.postMessage({ ready: true });
while (Atomics.load(stop, 0) === 0) { Atomics.wait(stop, 0, 0, intervalMs); sample(); }
sample();
parentPort.postMessage({ peak, samples });
`;

async function startRssSampler(cgroupPath: string, intervalMs: number): Promise<RssSampler> {
  const stat = await readMemoryStat(cgroupPath);
  // v1: total_rss (anon incl. descendants, no page cache, no shmem); v2: anon.
  const field = ['total_rss', 'rss', 'anon'].find((f) => stat.has(f));
  if (!field) throw new EngineError('E_CGROUP', `no rss field in ${cgroupPath}/memory.stat`);
  const stopFlag = new SharedArrayBuffer(4);
  const worker = new Worker(SAMPLER_SOURCE, {
    eval: true,
    workerData: { file: path.join(cgroupPath, 'memory.stat'), field, intervalMs, stopFlag },
  });
  // The invocation starts only once the sampler has taken its first sample: a worker boots in tens
  // of milliseconds, hundreds on a loaded machine, and a short function could run to its end
  // unseen (CI once profiled a 25 MiB function as 0.2 MiB).
  let ready!: () => void;
  const started = new Promise<void>((resolve) => (ready = resolve));
  const result = new Promise<{ peak: number; samples: number }>((resolve, reject) => {
    worker.on('message', (m: { ready?: boolean; peak?: number; samples?: number }) => {
      if (m.ready) ready();
      else resolve(m as { peak: number; samples: number });
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new EngineError('E_CGROUP', `rss sampler exited (${code}) before reporting`)));
  });
  await Promise.race([started, result]);
  return {
    stop: async () => {
      const flag = new Int32Array(stopFlag);
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
      try {
        return await result;
      } finally {
        await worker.terminate();
      }
    },
  };
}

/** Walks the host side of a bind /tmp; otherwise asks `find` inside the container, as the function's user. */
async function largestTmpFile(fc: FunctionContainer): Promise<number> {
  if (fc.hostTmpPath) return largestFileUnder(fc.hostTmpPath);
  const res = await fc.exec(['/bin/sh', '-c', 'find /tmp -xdev -type f -exec stat -c %s {} + 2>/dev/null; true'], { timeoutMs: 30_000 });
  return res.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isFinite(n))
    .reduce((a, b) => Math.max(a, b), 0);
}

export async function largestFileUnder(dir: string): Promise<number> {
  let largest = 0;
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.pop()!;
    let entries;
    try {
      entries = await readdir(current, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const entry of entries) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile()) {
        const st = await lstat(full).catch(() => undefined);
        if (st && st.size > largest) largest = st.size;
      }
    }
  }
  return largest;
}

/**
 * Profiles by key in one JSON file, replaced atomically (write, fsync, rename, fsync the directory)
 * so a crash leaves either the old or the new file, never a torn one.
 */
export class ProfileStore {
  readonly file: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(file = path.join(defaultStateDir(), 'profiles.json')) {
    this.file = file;
  }

  async all(): Promise<Record<string, FunctionProfile>> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
    try {
      return JSON.parse(text) as Record<string, FunctionProfile>;
    } catch (err) {
      throw new EngineError('E_BAD_SPEC', `profile store ${this.file} is not valid JSON: ${errorMessage(err)}`, undefined, err);
    }
  }

  async get(key: string): Promise<FunctionProfile | undefined> {
    return (await this.all())[key];
  }

  put(profile: FunctionProfile): Promise<void> {
    // Serialised so two concurrent puts do not both read the old file and lose one update.
    const next = this.chain.then(async () => {
      const profiles = await this.all();
      profiles[profile.key] = profile;
      await writeFileAtomic(this.file, `${JSON.stringify(profiles, null, 2)}\n`);
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
