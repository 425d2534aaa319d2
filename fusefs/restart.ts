import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FusefsError } from './errors';
import { isMountPoint } from './memtier';
import { loadCore, repoRoot, type HolderTaken, type NativeCore, type NativeMountInfo, type NativeSession, type NativeSessionOptions } from './native';

/**
 * Restartable mounts (issue 14): the connection holder (fuse-store/helper/holder.c) keeps a mount's
 * /dev/fuse files while no daemon serves it, and the next `ephemera mount DIR --restartable` takes
 * them over with the journal the dead daemon left. One state directory per mount point holds the
 * holder's socket and log, the journal and the memory tier's tmpfs.
 */
export const RESTART_ROOT = '/run/ephemera/held';
export const DEFAULT_HOLDER_TIMEOUT_S = 30;

export interface RestartOptions {
  /** Default `${RESTART_ROOT}/<mount point, sanitized>`. */
  stateDir?: string;
  /** How long the holder waits for a successor before it aborts the connection (default 30 s). */
  holderTimeoutS?: number;
  /**
   * A cgroup (a relative name, made under every hierarchy of /sys/fs/cgroup) the holder moves into
   * once started: out of the daemon's own cgroup, which a service manager (systemd's default
   * KillMode=control-group) or a container runtime (a pod's rollout) kills whole on a restart.
   * Unset: the holder stays in the daemon's cgroup and survives only the daemon's own crash.
   */
  holderCgroup?: string;
  /** Where the cgroup hierarchies are mounted (default /sys/fs/cgroup; a pod sees the host's elsewhere). */
  cgroupFs?: string;
}

/** What the successor needs before it can load the journal (the holder keeps it as a blob). */
export interface HeldState {
  version: 1;
  mountpoint: string;
  memoryDir: string;
  spillDir: string;
  journal: string;
  store: string;
  queues: number;
  allowOther: boolean;
  mode: string;
  xattrs: boolean;
  rootMode: number;
  rootUid: number;
  rootGid: number;
  /**
   * The memory tier belongs to the caller (the node daemon's sized tmpfs per mount), not to this
   * state directory: a successor uses it as it is and leaves it mounted when it closes.
   * Absent in states written before node-daemon takeover: false.
   */
  sharedMemoryTier?: boolean;
  /** The tiers are file systems of the quota's size (the native quota resizes them). Absent: false. */
  memoryTierSized?: boolean;
  diskTierSized?: boolean;
}

export interface RestartPaths {
  dir: string;
  socket: string;
  journal: string;
  memoryDir: string;
  log: string;
  pidFile: string;
}

export function restartPaths(mountpoint: string, stateDir?: string): RestartPaths {
  const dir = stateDir ?? path.join(RESTART_ROOT, mountpoint.replace(/[^A-Za-z0-9]+/g, '_').slice(-96));
  return {
    dir,
    socket: path.join(dir, 'holder.sock'),
    journal: path.join(dir, 'journal'),
    memoryDir: path.join(dir, 'mem'),
    log: path.join(dir, 'holder.log'),
    pidFile: path.join(dir, 'holder.pid'),
  };
}

export function holderBinary(): string {
  const file = path.join(repoRoot(), 'fuse-store', 'build', 'ephemera-holder');
  if (!fs.existsSync(file)) throw new FusefsError('E_NOT_BUILT', `the connection holder is not built (${file}): run \`npm run build\``);
  return file;
}

/** Whether a live holder keeps this mount point's connection for a successor (its socket and its pid). */
export function holderListening(paths: RestartPaths): boolean {
  if (!fs.existsSync(paths.socket)) return false;
  try {
    const pid = Number(fs.readFileSync(paths.pidFile, 'utf8'));
    if (!(pid > 0)) return false;
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Asks a live holder for the connection; null when none keeps one for this mount point. */
export function takeFromHolder(core: NativeCore, paths: RestartPaths): { taken: HolderTaken; state: HeldState; fuseCount: number } | null {
  if (!fs.existsSync(paths.socket)) return null;
  const taken = core.holderTake(paths.socket, 5000);
  if (!taken) return null;
  const nl = taken.blob.indexOf('\n');
  const fuseCount = Number(taken.blob.slice(0, nl));
  let state: HeldState;
  try {
    state = JSON.parse(taken.blob.slice(nl + 1)) as HeldState;
  } catch {
    throw new FusefsError('E_TAKEOVER', `the holder at ${paths.socket} keeps state this build cannot read`);
  }
  if (state.version !== 1) {
    throw new FusefsError('E_STATE_VERSION', `the holder at ${paths.socket} keeps state version ${String(state.version)}; this build reads version 1`);
  }
  return { taken, state, fuseCount };
}

/**
 * Starts a holder for a new mount and waits until it listens (it writes its pid file after
 * listen(2)). It runs in its own session, so signals to the daemon's group do not reach it.
 */
export async function startHolder(paths: RestartPaths, timeoutS: number, detach: readonly string[] = [paths.memoryDir], placement: Pick<RestartOptions, 'holderCgroup' | 'cgroupFs'> = {}): Promise<number> {
  fs.rmSync(paths.pidFile, { force: true });
  const log = fs.openSync(paths.log, 'a');
  const child = spawn(
    holderBinary(),
    ['--socket', paths.socket, '--timeout', String(timeoutS), '--pid-file', paths.pidFile, ...detach.flatMap((d) => ['--detach', d])],
    { detached: true, stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  child.unref();
  const deadline = Date.now() + 5000;
  while (!fs.existsSync(paths.pidFile)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new FusefsError('E_HOLDER', `the connection holder did not start (see ${paths.log})`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const pid = child.pid ?? 0;
  if (placement.holderCgroup) {
    try {
      moveToCgroup(pid, placement.holderCgroup, placement.cgroupFs);
    } catch (e) {
      child.kill('SIGKILL'); // a holder the next restart would kill anyway is no holder
      throw e;
    }
  }
  return pid;
}

/**
 * The directories of cgroup `name` in every hierarchy mounted under `root`: `root/name` on a
 * unified (v2) mount, else `root/<hierarchy>/name` for each v1 hierarchy (aliases such as
 * `cpu` → `cpu,cpuacct` once). A service manager or runtime may kill by any of them.
 */
export function cgroupDirsFor(name: string, root = '/sys/fs/cgroup'): string[] {
  if (!/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(name) || name.split('/').some((p) => p === '.' || p === '..')) {
    throw new FusefsError('E_BAD_OPTION', `--holder-cgroup: "${name}" is not a relative cgroup name (letters, digits, _ . - and /)`);
  }
  if (fs.existsSync(path.join(root, 'cgroup.controllers'))) return [path.join(root, name)];
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch (e) {
    throw new FusefsError('E_HOLDER', `cannot read the cgroup hierarchies under ${root}: ${(e as Error).message}`);
  }
  const dirs: string[] = [];
  for (const entry of entries.sort()) {
    const dir = path.join(root, entry);
    if (fs.lstatSync(dir).isSymbolicLink() || !fs.existsSync(path.join(dir, 'cgroup.procs'))) continue;
    dirs.push(path.join(dir, name));
  }
  if (dirs.length === 0) throw new FusefsError('E_HOLDER', `no cgroup hierarchy is mounted under ${root}`);
  return dirs;
}

/** Moves `pid` into cgroup `name` of every hierarchy (made if missing; a v1 cpuset gets its parent's cpus and mems). */
export function moveToCgroup(pid: number, name: string, root?: string): void {
  for (const dir of cgroupDirsFor(name, root)) {
    try {
      fs.mkdirSync(dir, { recursive: true });
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        const own = path.join(dir, f);
        if (fs.existsSync(own) && fs.readFileSync(own, 'utf8').trim() === '') fs.writeFileSync(own, fs.readFileSync(path.join(path.dirname(dir), f), 'utf8').trim());
      }
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
    } catch (e) {
      throw new FusefsError('E_HOLDER', `cannot move the connection holder (pid ${pid}) into ${dir}: ${(e as Error).message}`);
    }
  }
}

/** A connection taken over from a holder and being served. */
export interface Adopted {
  session: NativeSession;
  info: NativeMountInfo;
  state: HeldState;
  stopped: Promise<void>;
}

/** The session a restartable mount runs, as its held state describes it (the first daemon's and every successor's). */
export function sessionOptionsOf(state: HeldState): NativeSessionOptions {
  return {
    mountpoint: state.mountpoint,
    allowOther: state.allowOther,
    queues: state.queues,
    mode: state.mode as 'auto',
    memoryDir: state.memoryDir,
    spillDir: state.spillDir,
    rootMode: state.rootMode,
    rootUid: state.rootUid,
    rootGid: state.rootGid,
    xattrs: state.xattrs,
    memoryTierSized: state.memoryTierSized ?? false,
    diskTierSized: state.diskTierSized ?? false,
    transport: 'device',
    journal: state.journal,
  };
}

/**
 * Takes `mountpoint`'s connection over from its holder and serves it (the journal loaded, the
 * resend asked for); null when no holder keeps it. On failure the fds received are closed: the
 * holder keeps its own copies and waits for the next successor, up to its timeout.
 */
export async function adoptFromHolder(core: NativeCore, mountpoint: string, paths: RestartPaths): Promise<Adopted | null> {
  const held = takeFromHolder(core, paths);
  if (!held) return null;
  const { taken, state, fuseCount } = held;
  let onStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (onStopped = resolve));
  try {
    if (state.mountpoint !== mountpoint) throw new FusefsError('E_TAKEOVER', `the holder at ${paths.socket} keeps ${state.mountpoint}, not ${mountpoint}`);
    if (!isMountPoint(state.memoryDir)) throw new FusefsError('E_TAKEOVER', `the memory tier ${state.memoryDir} is not mounted any more: its files are gone`);
    const session = new core.Session({ ...sessionOptionsOf(state), adoptStore: state.store });
    const info = await session.adopt({ fds: taken.fds, fuseCount, conn: taken.conn }, () => onStopped());
    return { session, info, state, stopped };
  } catch (e) {
    for (const fd of taken.fds) fs.closeSync(fd);
    fs.closeSync(taken.conn);
    const err = e as Error & { code?: string };
    const code = err.code === 'E_STATE_VERSION' || err.code === 'E_HOLDER_BUSY' ? err.code : 'E_TAKEOVER';
    throw new FusefsError(code, `cannot take over ${mountpoint}: ${err.message}`);
  }
}

// A successor's callers are waiting: bin/ephemera.js starts the takeover before the whole CLI
// loads (~0.4 s of modules), and `mount` picks the served connection up here.
let early: { mountpoint: string; result: Promise<Adopted | null> } | undefined;

/** Starts taking `mountpoint` over at once (default state directory). Never throws. */
export function takeoverEarly(mountpoint: string): void {
  const result = adoptFromHolder(loadCore(), mountpoint, restartPaths(mountpoint));
  result.catch(() => undefined); // reported when claimed
  early = { mountpoint, result };
}

/** The early takeover of `mountpoint`, if one was started (its failure rethrown to the claimer). */
export function claimEarlyTakeover(mountpoint: string, stateDir: string | undefined): Promise<Adopted | null> | undefined {
  if (!early || early.mountpoint !== mountpoint || stateDir !== undefined) return undefined;
  const { result } = early;
  early = undefined;
  return result;
}
