// Processes the tests start (daemons, holders, successors) and how they are stopped.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';

/** The process runs (a zombie awaiting its reaper has exited: it counts as gone). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until `pid` has exited (zombie or gone); false if it still runs after `ms`. */
export async function exitedWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!alive(pid)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Stops a daemon the test started, whatever state it is in: SIGTERM (it unmounts and prints its
 * counters), SIGKILL if it has not exited after `graceMs`. Nothing to do if it is gone already.
 */
export async function stopChild(child: ChildProcess, pid: number, exited: Promise<unknown>, graceMs = 5000): Promise<void> {
  if (!alive(pid)) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** SIGKILL for a cleanup step: never throws (the process may be gone). */
export function killHard(pid: number): void {
  if (alive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* exited in between */
    }
  }
}

/** A daemon a test spawned: `ephemera mount … --json` and the like. */
export interface SpawnedDaemon {
  pid: number;
  child: ChildProcess;
  exited: Promise<unknown>;
}

/**
 * The cleanup of a daemon a test started (a takeover's successor, typically): SIGTERM, SIGKILL if
 * it has not exited after `graceMs`; then waits for its stdout to end, so its last lines (the
 * `stopped` event with its counters) have been read. Nothing to do if it is gone already.
 */
export async function stopDaemon(d: SpawnedDaemon, graceMs = 5000): Promise<void> {
  await stopChild(d.child, d.pid, d.exited, graceMs);
  const out = d.child.stdout;
  if (out && !out.readableEnded && !out.destroyed) {
    await Promise.race([new Promise((r) => out.once('close', r)), new Promise((r) => setTimeout(r, 2000))]);
  }
}
