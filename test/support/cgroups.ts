// Real cgroup v1 memory cgroups for tests, created under this process's own memory cgroup and
// always removed: `remove()` is idempotent and `removeAllTestCgroups()` (call it in afterEach/afterAll)
// removes whatever a failed test left behind.
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { MemoryCgroup } from '../../fusefs/memory/cgroup';
import { cgroupV1WriteUnavailable, skipping } from './capabilities';

export interface TestCgroup {
  readonly dir: string;
  readonly cgroup: MemoryCgroup;
  /** Unpauses the OOM killer, lifts the limit, moves stray tasks to the parent, rmdirs. Idempotent. */
  remove(): Promise<void>;
}

export interface TestCgroupOptions {
  readonly limitBytes?: number;
  /** Parent directory; default: this process's own v1 memory cgroup. */
  readonly parentDir?: string;
}

const live = new Set<TestCgroup>();
let counter = 0;

/** Why real cgroup tests cannot run here, or undefined if they can (said loudly, once per process). */
export function cgroupV1Unavailable(): string | undefined {
  const why = cgroupV1WriteUnavailable();
  return why === undefined ? undefined : skipping('real cgroup v1 tests', why);
}

export async function createTestCgroup(options: TestCgroupOptions = {}): Promise<TestCgroup> {
  let parentDir = options.parentDir;
  if (parentDir === undefined) {
    const own = MemoryCgroup.fromPid('self');
    own.close();
    parentDir = own.dir;
  }
  counter += 1;
  const dir = path.join(parentDir, `ephemera-test-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`);
  fs.mkdirSync(dir);
  const cgroup = MemoryCgroup.fromPath(dir);
  let removed = false;
  const handle: TestCgroup = {
    dir,
    cgroup,
    remove: async () => {
      if (removed) return;
      removed = true;
      live.delete(handle);
      cgroup.close();
      await removeCgroupTree(dir, parentDir);
    },
  };
  live.add(handle);
  try {
    if (options.limitBytes !== undefined) cgroup.setLimit(options.limitBytes);
  } catch (err) {
    await handle.remove();
    throw err;
  }
  return handle;
}

export async function removeAllTestCgroups(): Promise<void> {
  const errors: unknown[] = [];
  for (const handle of [...live]) {
    try {
      await handle.remove();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, 'some test cgroups could not be removed');
}

async function removeCgroupTree(dir: string, parentDir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) await removeCgroupTree(path.join(dir, entry.name), dir);
  }
  // A task held by a paused OOM killer must be let go before anything else can finish.
  bestEffortWrite(path.join(dir, 'memory.oom_control'), '0');
  bestEffortWrite(path.join(dir, 'memory.limit_in_bytes'), '-1');
  const deadline = Date.now() + 5_000;
  for (;;) {
    for (const pid of readPids(dir)) bestEffortWrite(path.join(parentDir, 'cgroup.procs'), String(pid));
    try {
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      // EBUSY while an exiting task is still listed; it goes away within a few ms.
      if (code !== 'EBUSY' || Date.now() > deadline) throw new Error(`cannot remove test cgroup ${dir}: ${code}`, { cause: err });
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function readPids(dir: string): number[] {
  try {
    return fs
      .readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function bestEffortWrite(file: string, value: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch {
    // A task that exited in between, or a cgroup already gone.
  }
}

export type HeldProcess = ChildProcessByStdio<Writable, Readable, Readable> & {
  /** Resolves with the exit code (or the signal name) once the process ends. */
  readonly exited: Promise<number | string>;
  /** Everything the process printed on stdout so far. */
  stdoutText(): string;
};

/**
 * Spawns `command` held before exec (`sh` waits for a line on stdin), moves it into `cgroup`, then
 * lets it run: so not one page of the command is charged anywhere else.
 */
export function spawnInCgroup(cgroup: MemoryCgroup, command: string, args: readonly string[]): HeldProcess {
  const child = spawn('sh', ['-c', 'read go; exec "$@"', 'sh', command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.resume();
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code ?? -1)));
  if (child.pid === undefined) throw new Error(`cannot spawn ${command}`);
  cgroup.addProcess(child.pid);
  child.stdin.write('go\n');
  return Object.assign(child, { exited, stdoutText: () => stdout });
}

/** Kills a held process and waits for it; for afterEach. */
export async function killAndWait(child: HeldProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  await child.exited;
}
