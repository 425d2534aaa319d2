import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FusefsError } from './errors';

/**
 * The memory tier's home: a private tmpfs mounted huge=within_size (large folios made 1 MiB I/O
 * 2.7–3.7x faster than a default tmpfs in the design probe; never huge=always, which collapses
 * small-file creation). Files on it are O_TMPFILE, so it never shows a name. Its size bounds
 * nothing that matters: pages are charged to the writer's memory cgroup under passthrough.
 */
export class MemoryTierMount {
  private constructor(readonly dir: string, readonly huge: boolean) {}

  static create(dir: string): MemoryTierMount {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (isMountPoint(dir)) unmountQuietly(dir);  // a dead daemon's leftover
    const size = os.totalmem();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `huge=within_size,mode=0700,size=${size}`, 'ephemera-mem', dir], { stdio: 'pipe' });
      return new MemoryTierMount(dir, true);
    } catch {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', `mode=0700,size=${size}`, 'ephemera-mem', dir], { stdio: 'pipe' });
        return new MemoryTierMount(dir, false);
      } catch (e) {
        throw new FusefsError('E_MOUNT', `cannot mount the memory tier tmpfs on ${dir}: ${(e as Error).message}`);
      }
    }
  }

  /** A memory tier a dead daemon left mounted, taken over by its successor (restartable mounts). */
  static adopt(dir: string): MemoryTierMount {
    if (!isMountPoint(dir)) throw new FusefsError('E_TAKEOVER', `the memory tier ${dir} is not mounted any more: its files are gone`);
    return new MemoryTierMount(dir, true);
  }

  close(): void {
    unmountQuietly(this.dir);
    try {
      fs.rmdirSync(this.dir);
    } catch {
      /* already gone */
    }
  }
}

/** Mount points as listed in /proc/self/mountinfo (field 5), octal escapes decoded. */
export function listMountPoints(): string[] {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

export function isMountPoint(dir: string): boolean {
  return listMountPoints().includes(dir);
}

/**
 * Unmounts `dir` now where nothing holds it, so its file system (and every page it held, charged to
 * whoever wrote it) is gone when this returns; lazily where something still does. A loop device
 * marked autoclear is detached with the last unmount.
 */
export function unmountNow(dir: string): void {
  for (let i = 0; i < 8 && isMountPoint(dir); i++) {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe', timeout: 30_000 });
    } catch {
      break; // busy: the lazy unmount below
    }
  }
  unmountQuietly(dir);
}

export function unmountQuietly(dir: string): void {
  for (let i = 0; i < 8 && isMountPoint(dir); i++) {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    } catch {
      break;
    }
  }
}

/**
 * Memory-tier tmpfs mounts are named `mem-<pid>[-…]` after the process that made them. One whose
 * process is gone (a killed `ephemera mount` or daemon) holds nothing anyone can reach (its files
 * are O_TMPFILE): unmount and remove it, so kills do not pile up tmpfs mounts. Returns what it removed.
 */
export const MEMORY_TIER_ROOT = '/run/ephemera';

export function sweepDeadMemoryTiers(root = MEMORY_TIER_ROOT): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = /^mem-(\d+)(?:-|$)/.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    const dir = path.join(root, name);
    unmountQuietly(dir);
    try {
      fs.rmdirSync(dir);
      removed.push(dir);
    } catch {
      /* still busy (a lazy unmount) or not empty: left for the next sweep */
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
