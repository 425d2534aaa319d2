import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FusefsError } from '../errors';
import * as crypto from 'node:crypto';
import { isMountPoint } from '../memtier';
import { RESTART_ROOT } from '../restart';
import { stderrOf } from './memory-tier';

export const DEFAULT_STATE_DIR = '/var/lib/ephemera/node';

/** Where a daemon keeps everything; cleanup needs nothing but the state dir to find it all. */
export interface DaemonPaths {
  stateDir: string;
  socket: string;
  /** The shared parent of mount points. */
  mountsDir: string;
  /** One JSON record per mount. */
  recordsDir: string;
  spillRoot: string;
  memoryRoot: string;
  /** Private mount points of the FUSE sessions (published by bind mounts). */
  fuseRoot: string;
  daemonRecord: string;
}

export function daemonPaths(stateDir = DEFAULT_STATE_DIR, overrides: { socket?: string; mountsDir?: string } = {}): DaemonPaths {
  const root = path.resolve(stateDir);
  return {
    stateDir: root,
    socket: path.resolve(overrides.socket ?? path.join(root, 'control.sock')),
    mountsDir: path.resolve(overrides.mountsDir ?? path.join(root, 'mounts')),
    recordsDir: path.join(root, 'records'),
    spillRoot: path.join(root, 'spill'),
    memoryRoot: path.join(root, 'mem'),
    fuseRoot: path.join(root, 'fuse'),
    daemonRecord: path.join(root, 'daemon.json'),
  };
}

/**
 * Where a restartable node-daemon mount's holder socket and journal live: one directory per FUSE
 * path, under a short name (a unix socket path has 108 bytes; mount ids run to ~90 characters).
 */
export function heldStateDir(fusePath: string): string {
  return path.join(RESTART_ROOT, `node-${crypto.createHash('sha256').update(fusePath).digest('hex').slice(0, 20)}`);
}

/**
 * Makes `dir` a shared mount point (bind-mounting it onto itself first if it is not a mount), so a
 * container that bind-mounts a child with rslave propagation sees our unmount and remount of that
 * child after a daemon restart. Returns whether we created the bind mount (cleanup undoes only that).
 */
export function ensureSharedParent(dir: string): boolean {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  let made = false;
  try {
    if (!isMountPoint(dir)) {
      execFileSync('mount', ['--bind', dir, dir], { stdio: 'pipe', timeout: 10_000 });
      made = true;
    }
    execFileSync('mount', ['--make-shared', dir], { stdio: 'pipe', timeout: 10_000 });
  } catch (e) {
    throw new FusefsError('E_MOUNT', `cannot make ${dir} a shared mount: ${stderrOf(e)}`);
  }
  return made;
}

const OVERLAYFS_SUPER_MAGIC = 0x794c7630;
const FUSE_SUPER_MAGIC = 0x65735546;
const TMPFS_MAGIC = 0x01021994;

/**
 * The disk tier must be a plain local file system: the kernel refuses passthrough onto a stacked
 * one (overlayfs, another FUSE), and a tmpfs would make the "disk" tier memory again.
 */
export function checkSpillFilesystem(dir: string): void {
  const st = fs.statfsSync(dir);
  const bad: Record<number, string> = { [OVERLAYFS_SUPER_MAGIC]: 'overlayfs', [FUSE_SUPER_MAGIC]: 'FUSE', [TMPFS_MAGIC]: 'tmpfs' };
  const name = bad[Number(st.type)];
  if (name) throw new FusefsError('E_BAD_OPTION', `spill dir ${dir} is on ${name}: the disk tier needs a plain local file system (e.g. ext4, xfs)`);
}

/** Creates a per-mount spill dir (mode 0700); returns whether it was created here. */
export function prepareSpillDir(dir: string): boolean {
  const existed = fs.existsSync(dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  checkSpillFilesystem(dir);
  // Spill files are O_TMPFILE (no names) or named <ino>.spill and unlinked at once; a crash in
  // between can leave the latter behind, and they belong to no one after a restart.
  for (const name of fs.readdirSync(dir)) if (name.endsWith('.spill')) fs.rmSync(path.join(dir, name), { force: true });
  return !existed;
}
