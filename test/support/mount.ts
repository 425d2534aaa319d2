import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fuseMountUnavailable, skipping } from './capabilities';
import { expectCleanProtocol, protocolCounters, type ProvokedCounters } from './protocol';

export const REPO = path.resolve(__dirname, '..', '..');
const CLI = path.join(REPO, 'bin', 'ephemera.js');

/** Why mount tests cannot run here, or null: what they need, checked as such (not as uid 0). */
function mountBlocker(): string | null {
  const fuse = fuseMountUnavailable();
  if (fuse) return fuse;
  if (!fs.existsSync(path.join(REPO, 'fuse-store', 'build', 'Release', 'fuse_store.node'))) return 'native core not built (npm run build)';
  if (!fs.existsSync(path.join(REPO, 'dist', 'cli', 'main.js'))) return 'CLI not built (npm run build)';
  return null;
}

/** Why mount tests cannot run here, or null; says so loudly (once per process). */
export function mountUnavailableReason(): string | null {
  const why = mountBlocker();
  return why === null ? null : skipping('FUSE mount tests', why);
}

export function skipLoudly(suite: string): boolean {
  const why = mountBlocker();
  if (why) skipping(suite, why);
  return why !== null;
}

export interface TestMount {
  dir: string;
  mode: string;
  pid: number;
  process: ChildProcess;
  /** Unmounts through SIGTERM and returns the daemon's per-opcode counts. */
  stop(): Promise<Record<string, number>>;
  /**
   * Cleans up whatever state the daemon is in (killed, hung, stopped). Idempotent. A daemon that
   * stopped cleanly printed its protocol counters: they must be 0 (test/support/protocol.ts).
   */
  teardown(): Promise<void>;
}

export interface StartMountOptions {
  args?: string[];
  /**
   * The daemon runs under `timeout -s KILL`: if a test hangs on a FUSE request (a sync syscall
   * blocks the test worker, so no JS timer can fire), the daemon dies, the kernel aborts the
   * connection and the blocked call returns ENOTCONN. So a hung request never hangs the suite.
   */
  maxLifetimeS?: number;
  dir?: string;
  /** Safety-net counts this suite provokes on purpose; teardown asserts every other one is 0. */
  provoked?: ProvokedCounters;
}

/** Starts `ephemera mount` on a fresh directory in a child process; resolves on its ready line. */
export async function startMount(opts: StartMountOptions = {}): Promise<TestMount> {
  const base = opts.dir ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-test-'));
  if (base) fs.chmodSync(base, 0o755); // other users (uid 1000 in the permission tests) must reach the mount
  const dir = opts.dir ?? path.join(base!, 'mnt');
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    // A dead daemon's mount answers ENOTCONN: `ephemera mount` itself must recover from that.
    if ((e as NodeJS.ErrnoException).code !== 'ENOTCONN') throw e;
  }
  const child = spawn(
    'timeout',
    ['-s', 'KILL', String(opts.maxLifetimeS ?? 600), process.execPath, CLI, 'mount', dir, '--json', '--allow-other', ...(opts.args ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = readline.createInterface({ input: child.stdout! });
  const events: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  lines.on('line', (l) => {
    try {
      events.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      events.push({ event: 'text', line: l });
    }
    wake?.();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // 'exit' can come before the pipes are drained: the stopped line arrives by 'close'.
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const next = async (event: string, timeoutMs: number): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = events.find((e) => e.event === event);
      if (found) return found;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`ephemera mount exited (${child.exitCode ?? child.signalCode}) before "${event}": ${stderr.trim()}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for "${event}" from ephemera mount: ${stderr.trim()}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
  };
  let ready: Record<string, unknown>;
  try {
    ready = await next('ready', 15_000);
  } catch (e) {
    child.kill('SIGKILL');
    cleanupDir(dir);
    throw e;
  }
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
    cleanupDir(dir);
    if (base) fs.rmSync(base, { recursive: true, force: true });
    // A daemon the test killed prints nothing; one that stopped must have answered every request.
    const stopped = events.find((e) => e.event === 'stopped');
    if (stopped) expectCleanProtocol(protocolCounters(stopped), `ephemera mount ${dir}`, opts.provoked);
  };
  return {
    dir,
    mode: String(ready.mode),
    pid: Number(ready.pid),
    process: child,
    async stop() {
      child.kill('SIGTERM');
      const stopped = await next('stopped', 10_000);
      await exited;
      return (stopped.counters ?? {}) as Record<string, number>;
    },
    teardown,
  };
}

/** Tears every mount down, then throws the first failure (a counter assertion), so none is left mounted. */
export async function teardownAll(mounts: TestMount[]): Promise<void> {
  const failures: unknown[] = [];
  for (const m of mounts.splice(0)) await m.teardown().catch((e: unknown) => void failures.push(e));
  if (failures.length > 0) throw failures[0];
}

/** Detaches a (possibly dead) mount at dir; never throws. */
export function cleanupDir(dir: string): void {
  for (let i = 0; i < 4; i++) {
    const mounted = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
    if (!mounted) return;
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    } catch {
      return;
    }
  }
}
