import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { z } from 'zod';
import { BenchError, errorMessage } from './errors';
import { packageRoot, runProcess, tail } from './proc';

/** Targets a suite can set up on the host itself (container suites bring their own). */
export const HOST_TARGETS = ['ephemera', 'ephemera-disk', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'] as const;
export type HostTargetName = (typeof HOST_TARGETS)[number];

export function isHostTarget(name: string): name is HostTargetName {
  return (HOST_TARGETS as readonly string[]).includes(name);
}

export interface TeardownReport {
  /** The daemon's per-opcode counters from its `stopped` line (ephemera targets only). */
  counters?: Record<string, number>;
  /** Everything that did not go cleanly; empty when teardown was clean. */
  problems: string[];
}

export interface HostTarget {
  name: HostTargetName;
  /** The directory workloads write into (the target's `/tmp`). */
  dir: string;
  /** The daemon serving this target; absent for kernel file systems. */
  daemon?: {
    pid: number;
    mode: string;
    /** The daemon's per-opcode request counts now (SIGUSR2 → a `counters` line). */
    counters(signal?: AbortSignal): Promise<Record<string, number>>;
  };
  /** Unmounts and removes everything setup made. Idempotent; never throws. */
  teardown(): Promise<TeardownReport>;
}

export interface HostTargetContext {
  /** A private directory on the root disk for this run (from createRunDir). */
  runDir: string;
  signal: AbortSignal;
  log: (line: string) => void;
  /** argv that starts the ephemera CLI; default: this node running the checkout's bin/ephemera.js. */
  ephemeraCommand?: string[];
  readyTimeoutMs?: number;
  stopTimeoutMs?: number;
}

// statfs(2) magic numbers (linux/magic.h).
const FS_MAGIC: Record<number, string> = {
  0x01021994: 'tmpfs',
  0x858458f6: 'ramfs',
  0x794c7630: 'overlayfs',
  0x65735546: 'fuse',
};

/**
 * Where runs keep their directories: Docker keeps overlay2's lower/upper/work under /var/lib/docker
 * on the node's disk, so the overlay and disk targets live under /var/lib too. Refused when that
 * is a memory or stacked file system, which would turn "disk" and "overlay" into tmpfs in disguise.
 */
export function defaultBenchRoot(): string {
  return process.env.EPHEMERA_BENCH_ROOT ?? '/var/lib/ephemera-bench';
}

export function createRunDir(root = defaultBenchRoot()): string {
  fs.mkdirSync(root, { recursive: true });
  const kind = FS_MAGIC[Number(fs.statfsSync(root).type)];
  if (kind)
    throw new BenchError('E_TARGET_SETUP', `${root} is on ${kind}; the overlay and disk targets need the root disk (set EPHEMERA_BENCH_ROOT)`);
  return fs.mkdtempSync(path.join(root, 'run-'));
}

/** Mount points at or below `dir`, from /proc/self/mountinfo (field 5, octal-escaped). */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p === dir || p.startsWith(prefix));
}

/**
 * Removes a run directory, but only once nothing is mounted below it: a recursive rm through a
 * live mount would delete someone's data (or hang on a dead FUSE daemon).
 */
export function removeRunDir(runDir: string): string[] {
  const left = mountsUnder(runDir);
  if (left.length > 0) return [`left ${runDir} in place: still mounted: ${left.join(', ')}`];
  fs.rmSync(runDir, { recursive: true, force: true });
  return [];
}

async function mount(args: string[], signal: AbortSignal): Promise<void> {
  const outcome = await runProcess('mount', args, { signal, timeoutMs: 30_000, timeoutCode: 'E_TARGET_SETUP' });
  if (outcome.exitCode !== 0) throw new BenchError('E_TARGET_SETUP', `mount ${args.join(' ')}: ${tail(outcome.stderr)}`);
}

/** Unmounts; lazily if busy, so teardown never hangs on an open file. Returns problems. */
async function unmount(mountpoint: string): Promise<string[]> {
  if (mountsUnder(mountpoint).length === 0) return [];
  const attempt = async (args: string[]): Promise<string | undefined> => {
    try {
      const outcome = await runProcess('umount', args, { timeoutMs: 30_000 });
      return outcome.exitCode === 0 ? undefined : tail(outcome.stderr);
    } catch (err) {
      return errorMessage(err);
    }
  };
  if ((await attempt([mountpoint])) === undefined) return [];
  const lazyFailure = await attempt(['-l', mountpoint]);
  return lazyFailure === undefined ? [] : [`could not unmount ${mountpoint}: ${lazyFailure}`];
}

function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () => (result ??= fn());
}

async function setupTmpfs(name: 'tmpfs' | 'tmpfs-huge', base: string, signal: AbortSignal): Promise<HostTarget> {
  fs.mkdirSync(base);
  // Docker's --tmpfs: rw,nosuid,nodev,noexec, no size limit (half of RAM); huge=within_size is
  // the large-folio variant the design measured (never huge=always: small creates collapse).
  const options = ['rw', 'nosuid', 'nodev', 'noexec', 'mode=1777', ...(name === 'tmpfs-huge' ? ['huge=within_size'] : [])];
  await mount(['-t', 'tmpfs', '-o', options.join(','), name, base], signal);
  return {
    name,
    dir: base,
    teardown: once(async () => ({ problems: [...(await unmount(base)), ...removeRunDir(base)] })),
  };
}

async function setupOverlay(base: string, signal: AbortSignal): Promise<HostTarget> {
  const lower = path.join(base, 'lower');
  const upper = path.join(base, 'upper');
  const work = path.join(base, 'work');
  const merged = path.join(base, 'merged');
  for (const d of [lower, upper, work, merged]) fs.mkdirSync(d, { recursive: true });
  // An image's /tmp is a 1777 directory in a lower layer; writes land in the container's upper dir.
  fs.mkdirSync(path.join(lower, 'tmp'));
  fs.chmodSync(path.join(lower, 'tmp'), 0o1777);
  // As moby's overlay2 driver mounts it: index=off where the kernel supports it (so lowers can be
  // shared between containers), no redirect_dir/metacopy.
  const options = `lowerdir=${lower},upperdir=${upper},workdir=${work},index=off`;
  await mount(['-t', 'overlay', '-o', options, 'overlay', merged], signal);
  return {
    name: 'overlay',
    dir: path.join(merged, 'tmp'),
    teardown: once(async () => ({ problems: [...(await unmount(merged)), ...removeRunDir(base)] })),
  };
}

function setupDisk(base: string): HostTarget {
  fs.mkdirSync(base);
  return { name: 'disk', dir: base, teardown: once(async () => ({ problems: removeRunDir(base) })) };
}

const ReadyEvent = z.object({
  event: z.literal('ready'),
  mountpoint: z.string(),
  mode: z.enum(['passthrough', 'writeback']),
  pid: z.number().int().positive(),
});
const StoppedEvent = z.object({ event: z.literal('stopped'), counters: z.record(z.string(), z.number()) });
const CountersEvent = z.object({ event: z.literal('counters'), counters: z.record(z.string(), z.number()) });

/**
 * `ephemera mount DIR --json` in the foreground: the first JSON line on stdout is the ready event
 * (sent only after INIT, so no sleeps here); SIGTERM makes it unmount, print the stopped event with
 * its per-opcode counters and exit 0.
 */
async function setupEphemera(
  name: 'ephemera' | 'ephemera-disk',
  base: string,
  ctx: HostTargetContext,
): Promise<HostTarget> {
  const mountpoint = path.join(base, 'mnt');
  fs.mkdirSync(mountpoint, { recursive: true });
  const extra: string[] = [];
  if (name === 'ephemera-disk') {
    const spill = path.join(base, 'spill');
    fs.mkdirSync(spill);
    extra.push('--budget', '0', '--spill-dir', spill);
  }
  const command = ctx.ephemeraCommand ?? [process.execPath, path.join(packageRoot(), 'bin', 'ephemera.js')];
  const argv = [...command.slice(1), 'mount', mountpoint, '--json', ...extra];
  const child: ChildProcess = spawn(command[0]!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  // The first stderr lines say why a start failed (commander's "error: unknown command"), the
  // last ones why a running daemon died: keep both ends.
  const stderrHead: string[] = [];
  const stderrTail: string[] = [];
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    if (line.trim() === '') return;
    if (stderrHead.length < 2) stderrHead.push(line);
    else {
      stderrTail.push(line);
      if (stderrTail.length > 3) stderrTail.shift();
    }
  });
  const stderrSummary = (): string => [...stderrHead, ...stderrTail].join(' | ') || 'no stderr';
  let stopped: z.infer<typeof StoppedEvent> | undefined;
  // Callers of daemon.counters(), answered in order by the counters lines SIGUSR2 makes.
  const counterWaiters: Array<(counters: Record<string, number>) => void> = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, sig) => resolve({ code, signal: sig }));
    child.on('error', () => resolve({ code: null, signal: null }));
  });
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void exited.then((info) => (exitInfo = info));

  const ready = await new Promise<z.infer<typeof ReadyEvent>>((resolve, reject) => {
    const timeoutMs = ctx.readyTimeoutMs ?? 30_000;
    const fail = (message: string): void => {
      cleanup();
      reject(new BenchError('E_TARGET_SETUP', `${name}: ${message}`));
    };
    const timer = setTimeout(() => fail(`no ready line from \`ephemera mount\` within ${timeoutMs} ms`), timeoutMs);
    const onAbort = (): void => {
      cleanup();
      reject(ctx.signal.reason);
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    let seenReady = false;
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        return; // Not a protocol line (a stray log line); the protocol is JSON lines only.
      }
      if (!seenReady) {
        seenReady = true;
        const parsed = ReadyEvent.safeParse(message);
        if (parsed.success) {
          cleanup();
          resolve(parsed.data);
        } else fail(`first JSON line is not a ready event: ${line.slice(0, 200)}`);
        return;
      }
      const parsedCounters = CountersEvent.safeParse(message);
      if (parsedCounters.success) {
        counterWaiters.shift()?.(parsedCounters.data.counters);
        return;
      }
      const parsedStop = StoppedEvent.safeParse(message);
      if (parsedStop.success) stopped = parsedStop.data;
    });
    void exited.then((info) => {
      // Give readline a turn to deliver the last lines before judging that no ready line came.
      setImmediate(() => {
        if (!seenReady)
          fail(
            `\`ephemera mount\` exited (${info.code ?? info.signal}) before ready: ${stderrSummary()}`,
          );
      });
    });
    function cleanup(): void {
      clearTimeout(timer);
      ctx.signal.removeEventListener('abort', onAbort);
    }
  }).catch(async (err: unknown) => {
    if (exitInfo === undefined) {
      child.kill('SIGKILL');
      await exited;
    }
    await unmount(mountpoint);
    removeRunDir(base);
    throw err;
  });

  const teardown = once(async (): Promise<TeardownReport> => {
    const problems: string[] = [];
    if (exitInfo === undefined) {
      child.kill('SIGTERM');
      const stopMs = ctx.stopTimeoutMs ?? 20_000;
      const late = await Promise.race([exited, new Promise<'late'>((r) => setTimeout(() => r('late'), stopMs).unref())]);
      if (late === 'late') {
        problems.push(`${name}: daemon did not exit within ${stopMs} ms of SIGTERM; killed`);
        child.kill('SIGKILL');
        await exited;
      }
    }
    await new Promise((r) => setImmediate(r));
    const info = exitInfo ?? (await exited);
    if (info.code !== 0)
      problems.push(`${name}: daemon exited ${info.code ?? info.signal}: ${stderrSummary()}`);
    if (!stopped) problems.push(`${name}: daemon printed no stopped line`);
    const stale = mountsUnder(mountpoint).length > 0;
    if (stale) problems.push(`${name}: daemon exited but left ${mountpoint} mounted`);
    problems.push(...(await unmount(mountpoint)), ...removeRunDir(base));
    return { counters: stopped?.counters, problems };
  });
  ctx.log(`${name}: mounted ${ready.mountpoint} (${ready.mode}, pid ${ready.pid})`);
  const counters = (signal?: AbortSignal): Promise<Record<string, number>> =>
    new Promise((resolve, reject) => {
      if (exitInfo !== undefined) return reject(new BenchError('E_TARGET_SETUP', `${name}: daemon exited (${exitInfo.code ?? exitInfo.signal}); no counters`));
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        const i = counterWaiters.indexOf(answer);
        if (i >= 0) counterWaiters.splice(i, 1);
        reject(new BenchError('E_TIMEOUT', `${name}: no counters line within 5 s of SIGUSR2`));
      }, 5000);
      const answer = (c: Record<string, number>): void => {
        clearTimeout(timer);
        resolve(c);
      };
      counterWaiters.push(answer);
      child.kill('SIGUSR2');
    });
  return { name, dir: mountpoint, daemon: { pid: ready.pid, mode: ready.mode, counters }, teardown };
}

/** Sets up one target under `ctx.runDir/<id>`; on failure nothing it made is left behind. */
export async function setupHostTarget(name: string, id: string, ctx: HostTargetContext): Promise<HostTarget> {
  if (!isHostTarget(name)) throw new BenchError('E_UNKNOWN_TARGET', `unknown host target ${name} (host targets: ${HOST_TARGETS.join(', ')})`);
  const base = path.join(ctx.runDir, id);
  try {
    switch (name) {
      case 'tmpfs':
      case 'tmpfs-huge':
        return await setupTmpfs(name, base, ctx.signal);
      case 'overlay':
        return await setupOverlay(base, ctx.signal);
      case 'disk':
        return setupDisk(base);
      case 'ephemera':
      case 'ephemera-disk':
        return await setupEphemera(name, base, ctx);
    }
  } catch (err) {
    // Whatever the failed setup made (never through a live mount: removeRunDir checks).
    if (fs.existsSync(base)) removeRunDir(base);
    if (err instanceof BenchError) throw err;
    throw new BenchError('E_TARGET_SETUP', `${name}: ${errorMessage(err)}`, { cause: err });
  }
}

/** VmRSS of a process in KiB, from /proc/<pid>/status. */
export function readRssKiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new BenchError('E_BENCH_IO', `no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}
