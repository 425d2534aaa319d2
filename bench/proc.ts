import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BenchError } from './errors';

export interface ProcessOutcome {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  exitSignal: NodeJS.Signals | null;
}

export interface RunProcessOptions {
  signal?: AbortSignal;
  /** Killed (SIGTERM, then SIGKILL) past this; the run fails with `timeoutCode`. */
  timeoutMs: number;
  timeoutCode?: string;
  cwd?: string;
}

/**
 * Runs a program to completion and captures its output. On abort the child gets SIGTERM (SIGKILL
 * 2 s later) and the promise rejects with the signal's reason once the child is gone, so callers
 * can tear down mounts the child was using without racing it.
 */
export function runProcess(file: string, args: string[], opts: RunProcessOptions): Promise<ProcessOutcome> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(opts.signal.reason);
      return;
    }
    const child = spawn(file, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => stdout.push(b));
    child.stderr.on('data', (b: Buffer) => stderr.push(b));
    let failure: unknown;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (reason: unknown): void => {
      if (failure !== undefined) return;
      failure = reason;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 2000);
    };
    const onAbort = (): void => stop(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timeout = setTimeout(
      () => stop(new BenchError(opts.timeoutCode ?? 'E_TIMEOUT', `${path.basename(file)} ran longer than ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    const finish = (): void => {
      clearTimeout(timeout);
      if (killTimer) clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    child.on('error', (err) => {
      finish();
      reject(failure ?? err);
    });
    child.on('close', (exitCode, exitSignal) => {
      finish();
      if (failure !== undefined) reject(failure);
      else
        resolve({
          stdout: Buffer.concat(stdout).toString('utf8'),
          stderr: Buffer.concat(stderr).toString('utf8'),
          exitCode,
          exitSignal,
        });
    });
  });
}

/** Last few lines of a program's stderr, for error messages that should fit on one screen. */
export function tail(text: string, lines = 5): string {
  return text.trim().split('\n').slice(-lines).join(' | ');
}

/** The checkout's root (holds package.json and bin/), from either bench/*.ts or dist/bench/*.js. */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest) && fs.existsSync(path.join(dir, 'bin', 'ephemera.js'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new BenchError('E_BENCH_IO', `no ephemera checkout above ${__dirname}`);
    dir = parent;
  }
}
