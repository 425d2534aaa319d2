// A node daemon in a child process for tests: under `timeout -s KILL` (a hung request can never
// hang the suite: the daemon dies, the kernel aborts its connections, blocked calls get ENOTCONN),
// on a state dir of its own, with a teardown that kills it and runs `ephemera cleanup`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { DaemonClient } from '../../fusefs/daemon/client';
import { REPO } from '../support/mount';

export const CLI = path.join(REPO, 'bin', 'ephemera.js');

export interface TestDaemon {
  stateDir: string;
  socket: string;
  pid: number;
  process: ChildProcess;
  ready: Record<string, unknown>;
  /** The daemon's log so far (pino JSON lines on stderr; the last ~10-20 kB). */
  stderrText(): string;
  client(): Promise<DaemonClient>;
  kill9(): Promise<void>;
  /** SIGUSR1 (an upgrade of a --restartable daemon): resolves with its 'handed-over' line and exit code. */
  handOver(): Promise<{ event: Record<string, unknown> | undefined; code: number | null }>;
  stop(): Promise<void>;
}

/** `inCgroup`: a cgroup directory the daemon (and what it starts) runs in, as under a service manager. */
export async function startDaemon(stateDir: string, args: string[] = [], maxLifetimeS = 240, inCgroup?: string): Promise<TestDaemon> {
  const argv = ['-s', 'KILL', String(maxLifetimeS), process.execPath, CLI, 'node-daemon', '--state-dir', stateDir, '--json', ...args];
  const child = inCgroup
    ? spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec timeout "$@"', inCgroup, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('timeout', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const events: Record<string, unknown>[] = [];
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node-daemon not ready within 20 s: ${stderr}`));
    }, 20_000);
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const event = JSON.parse(line) as Record<string, unknown>;
        events.push(event);
        if (event.event === 'ready') {
          clearTimeout(timer);
          resolve(event);
        }
      } catch {
        /* not ours */
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`node-daemon exited (${code ?? signal}) before ready: ${stderr}`));
    });
  });
  const socket = String(ready.socket);
  // `timeout` runs node as its child: the daemon's own pid is in the ready line.
  const pid = Number(ready.pid);
  return {
    stateDir,
    socket,
    pid,
    process: child,
    ready,
    stderrText: () => stderr,
    client: () => DaemonClient.connect(socket, { timeoutMs: 30_000 }),
    async kill9() {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await exited;
    },
    async handOver() {
      process.kill(pid, 'SIGUSR1');
      const t = setTimeout(() => process.kill(pid, 'SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
      // 'exit' can come before stdout is drained.
      await new Promise((r) => setTimeout(r, 50));
      return { event: events.find((e) => e.event === 'handed-over'), code: child.exitCode };
    },
    async stop() {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        return;
      }
      const t = setTimeout(() => process.kill(pid, 'SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

export function makeStateDir(): string {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-daemon-test-'));
  return path.join(base, 'state');
}

/** `ephemera cleanup` in a child (bounded), then the temp base; never throws (afterAll on failure too). */
export function cleanupStateDir(stateDir: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'cleanup', '--state-dir', stateDir, '--json'], { timeout: 30_000, encoding: 'utf8' });
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp && mp.startsWith(path.dirname(stateDir) + '/')) spawnSync('umount', ['-l', mp], { timeout: 10_000 });
  }
  fs.rmSync(path.dirname(stateDir), { recursive: true, force: true });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Mount points under `prefix` right now. */
export function mountsUnder(prefix: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((mp) => mp === prefix || mp.startsWith(prefix + '/'));
}

export const MiB = 1024 * 1024;
