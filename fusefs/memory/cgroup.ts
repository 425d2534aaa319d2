import * as fs from 'node:fs';
import * as path from 'node:path';
import { MemoryCgroupError, errnoCode } from './errors';

/**
 * A memory cgroup, v1 or v2, behind one surface.
 *
 * Usage is rss + shmem from `memory.stat`, never `memory.usage_in_bytes` / `memory.current`: those
 * count the disk tier's page cache, which the kernel reclaims by itself and which must not make the
 * adapter spill. On v1 the hierarchical `total_rss` + `total_shmem` are used (this kernel prints both
 * the local and the `total_` names; `total_*` include sub-cgroups, which is what a container's limit
 * bites on). v2's `memory.stat` is hierarchical already: `anon` + `shmem`.
 *
 * Control files are read through file descriptors opened once and read with pread at offset 0:
 * kernfs regenerates a seq_file when a read starts at 0, and this skips path lookup and open/close on
 * every 20 ms poll.
 */
export type CgroupVersion = 1 | 2;

export interface MemoryUsage {
  /** Anonymous memory (v1 `rss`, v2 `anon`). */
  readonly rssBytes: number;
  /** tmpfs/memfd/shared pages (v1 and v2 `shmem`). */
  readonly shmemBytes: number;
  /** rssBytes + shmemBytes: what the adapter keeps under the mark. */
  readonly bytes: number;
}

export interface OomState {
  /** v1 `oom_kill_disable`; always false on v2, which has no pause. */
  readonly paused: boolean;
  /** v1 `under_oom`: a task is stalled at the limit waiting for memory; always false on v2. */
  readonly underOom: boolean;
  /** Kills by the OOM killer in this cgroup (v1 `oom_control` / v2 `memory.events` `oom_kill`). */
  readonly oomKills: number;
  /** v2 `memory.events` `high`: times tasks were throttled at memory.high; always 0 on v1. */
  readonly throttleEvents: number;
}

/** Where to look for /proc and the cgroup mounts; tests point these at fixture trees. */
export interface CgroupResolveOptions {
  readonly procRoot?: string;
  /** Overrides the mounts found in `${procRoot}/self/mountinfo`. */
  readonly mounts?: CgroupMounts;
}

export interface CgroupMounts {
  /** Mount point of the v1 hierarchy that has the memory controller, if any. */
  readonly v1Memory?: string;
  /** Mount point of the cgroup2 hierarchy, if any. */
  readonly v2?: string;
}

/** Values at or above this in v1 `limit_in_bytes` mean "no limit" (the kernel prints PAGE_COUNTER_MAX pages). */
const V1_UNLIMITED_FLOOR = 2 ** 62;

const FILES = {
  1: { limit: 'memory.limit_in_bytes', stat: 'memory.stat', oom: 'memory.oom_control', procs: 'cgroup.procs' },
  2: { limit: 'memory.max', stat: 'memory.stat', oom: 'memory.events', procs: 'cgroup.procs' },
} as const;

type ProbeName = 'limit' | 'stat' | 'oom';

export class MemoryCgroup {
  readonly dir: string;
  readonly version: CgroupVersion;
  private readonly fds = new Map<ProbeName, number>();
  private readonly readBuffer = Buffer.allocUnsafe(16 * 1024);
  private closed = false;

  private constructor(dir: string, version: CgroupVersion) {
    this.dir = dir;
    this.version = version;
  }

  /** The cgroup whose directory is `dir`; the version is told by which control files exist. */
  static fromPath(dir: string): MemoryCgroup {
    const resolved = path.resolve(dir);
    if (fs.existsSync(path.join(resolved, FILES[1].limit))) return new MemoryCgroup(resolved, 1);
    if (fs.existsSync(path.join(resolved, FILES[2].limit))) return new MemoryCgroup(resolved, 2);
    // The v2 root cgroup has no memory.max; it is still a memory cgroup if the controller is on.
    if (fs.existsSync(path.join(resolved, 'memory.stat')) && fs.existsSync(path.join(resolved, 'cgroup.controllers'))) {
      return new MemoryCgroup(resolved, 2);
    }
    throw new MemoryCgroupError('E_NO_CGROUP', `no memory cgroup at ${resolved}`, { dir: resolved });
  }

  /** The memory cgroup a process is in, read from `/proc/<pid>/cgroup`. v1 wins when both exist. */
  static fromPid(pid: number | 'self', options: CgroupResolveOptions = {}): MemoryCgroup {
    const procRoot = options.procRoot ?? '/proc';
    const mounts = options.mounts ?? findCgroupMounts(procRoot);
    const membershipPath = path.join(procRoot, String(pid), 'cgroup');
    let membership: string;
    try {
      membership = fs.readFileSync(membershipPath, 'utf8');
    } catch (err) {
      throw new MemoryCgroupError('E_NO_CGROUP', `cannot read ${membershipPath} (${errnoCode(err) ?? 'error'})`, { pid }, err);
    }
    const parsed = parseProcCgroup(membership);
    if (parsed.v1Memory !== undefined && mounts.v1Memory !== undefined) {
      return MemoryCgroup.fromPath(path.join(mounts.v1Memory, parsed.v1Memory));
    }
    if (parsed.v2 !== undefined && mounts.v2 !== undefined) {
      return MemoryCgroup.fromPath(path.join(mounts.v2, parsed.v2));
    }
    throw new MemoryCgroupError('E_NO_CGROUP', `process ${pid} is in no memory cgroup that is mounted`, { pid, mounts });
  }

  /** Limit in bytes; `Infinity` when unlimited. */
  limit(): number {
    const text = this.readProbe('limit').trim();
    if (text === 'max') return Infinity;
    const value = parseCounter(text, this.filePath(FILES[this.version].limit));
    return this.version === 1 && value >= V1_UNLIMITED_FLOOR ? Infinity : value;
  }

  /**
   * Sets the hard limit. On v1 the kernel refuses to go below usage after reclaim fails
   * (EBUSY → `E_CGROUP_BUSY`); v2 accepts and reclaims or OOM-kills instead.
   */
  setLimit(bytes: number): void {
    const file = FILES[this.version].limit;
    this.writeControl(file, formatLimit(bytes, this.version));
  }

  /** The whole `memory.stat` as name → value. */
  stat(): Map<string, number> {
    return parseFlatKeyed(this.readProbe('stat'), this.filePath('memory.stat'));
  }

  /**
   * rss + shmem. `hierarchical: false` (v1 only) excludes sub-cgroups: used to show that a parent did
   * not absorb a charge that landed in a child.
   */
  usage(options: { hierarchical?: boolean } = {}): MemoryUsage {
    const stat = this.stat();
    const hierarchical = options.hierarchical ?? true;
    let rss: number;
    let shmem: number;
    if (this.version === 1) {
      const prefix = hierarchical ? 'total_' : '';
      rss = requireKey(stat, `${prefix}rss`, this.dir);
      shmem = requireKey(stat, `${prefix}shmem`, this.dir);
    } else {
      if (!hierarchical) {
        throw new MemoryCgroupError('E_UNSUPPORTED', 'cgroup v2 memory.stat has no local-only counters', { dir: this.dir });
      }
      rss = requireKey(stat, 'anon', this.dir);
      shmem = requireKey(stat, 'shmem', this.dir);
    }
    return { rssBytes: rss, shmemBytes: shmem, bytes: rss + shmem };
  }

  oomState(): OomState {
    const values = parseFlatKeyed(this.readProbe('oom'), this.filePath(FILES[this.version].oom));
    if (this.version === 1) {
      return {
        paused: values.get('oom_kill_disable') === 1,
        underOom: values.get('under_oom') === 1,
        oomKills: values.get('oom_kill') ?? 0,
        throttleEvents: 0,
      };
    }
    return { paused: false, underOom: false, oomKills: values.get('oom_kill') ?? 0, throttleEvents: values.get('high') ?? 0 };
  }

  /** v2 `memory.events` as name → count (low, high, max, oom, oom_kill, …). */
  events(): Map<string, number> {
    this.requireVersion(2, 'memory.events');
    return parseFlatKeyed(this.readProbe('oom'), this.filePath('memory.events'));
  }

  /**
   * Pauses (true) or resumes (false) the v1 OOM killer. While paused, a task that cannot be charged
   * sleeps (`under_oom 1`) until the limit is raised or the pause ends — whoever pauses must also
   * guarantee an unpause (see OomGuard). Writing 0 wakes the sleepers, which retry and, still over,
   * meet the OOM killer.
   */
  setOomKillerPaused(paused: boolean): void {
    this.requireVersion(1, 'pausing the OOM killer (cgroup v2 has none; OomGuard throttles with memory.high there)');
    this.writeControl(FILES[1].oom, paused ? '1' : '0');
  }

  /** v2 `memory.high` (throttle point); `Infinity` = "max". */
  high(): number {
    this.requireVersion(2, 'memory.high');
    const text = this.readFile('memory.high').trim();
    return text === 'max' ? Infinity : parseCounter(text, this.filePath('memory.high'));
  }

  setHigh(bytes: number): void {
    this.requireVersion(2, 'memory.high');
    this.writeControl('memory.high', formatLimit(bytes, 2));
  }

  /** Pids of the processes in this cgroup itself (not sub-cgroups). */
  pids(): number[] {
    return this.readFile(FILES[this.version].procs)
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => Number(line));
  }

  /** Moves a process (all its threads) into this cgroup. */
  addProcess(pid: number): void {
    this.writeControl(FILES[this.version].procs, String(pid));
  }

  /** Releases the pre-opened descriptors; the object must not be used afterwards. */
  close(): void {
    this.closed = true;
    for (const fd of this.fds.values()) {
      try {
        fs.closeSync(fd);
      } catch {
        // Already gone with the cgroup; nothing to release.
      }
    }
    this.fds.clear();
  }

  private requireVersion(version: CgroupVersion, what: string): void {
    if (this.version !== version) {
      throw new MemoryCgroupError('E_UNSUPPORTED', `${what} needs cgroup v${version}; ${this.dir} is v${this.version}`, {
        dir: this.dir,
      });
    }
  }

  private filePath(name: string): string {
    return path.join(this.dir, name);
  }

  private readProbe(name: ProbeName): string {
    if (this.closed) throw new MemoryCgroupError('E_CLOSED', `cgroup ${this.dir} was closed`);
    const file = this.filePath(FILES[this.version][name]);
    let fd = this.fds.get(name);
    try {
      if (fd === undefined) {
        fd = fs.openSync(file, 'r');
        this.fds.set(name, fd);
      }
      let length = 0;
      for (;;) {
        const n = fs.readSync(fd, this.readBuffer, length, this.readBuffer.length - length, length);
        if (n === 0) break;
        length += n;
        if (length === this.readBuffer.length) throw new Error(`${file} is larger than ${this.readBuffer.length} bytes`);
      }
      return this.readBuffer.toString('utf8', 0, length);
    } catch (err) {
      // A removed cgroup leaves the open fd readable with ENODEV; drop it so a re-created cgroup works.
      if (fd !== undefined) {
        this.fds.delete(name);
        try {
          fs.closeSync(fd);
        } catch {
          // Nothing more to release.
        }
      }
      throw this.ioError('read', file, err);
    }
  }

  private readFile(name: string): string {
    const file = this.filePath(name);
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw this.ioError('read', file, err);
    }
  }

  private writeControl(name: string, value: string): void {
    const file = this.filePath(name);
    try {
      // One write(2) per value: cgroup files act on each write, and a short write would be a different command.
      fs.writeFileSync(file, value);
    } catch (err) {
      if (errnoCode(err) === 'EBUSY') {
        throw new MemoryCgroupError('E_CGROUP_BUSY', `${file}: kernel refused ${value} (usage is above it)`, { file, value }, err);
      }
      throw this.ioError('write', file, err);
    }
  }

  private ioError(op: 'read' | 'write', file: string, err: unknown): MemoryCgroupError {
    if (err instanceof MemoryCgroupError) return err;
    const errno = errnoCode(err);
    if ((errno === 'ENOENT' || errno === 'ENODEV') && !fs.existsSync(this.dir)) {
      return new MemoryCgroupError('E_NO_CGROUP', `cgroup ${this.dir} is gone`, { dir: this.dir, file }, err);
    }
    return new MemoryCgroupError('E_CGROUP_IO', `cannot ${op} ${file} (${errno ?? String(err)})`, { file, errno }, err);
  }
}

/** `/proc/<pid>/cgroup` → the v1 memory path and the v2 path, relative to their mounts. */
export function parseProcCgroup(text: string): { v1Memory?: string; v2?: string } {
  const result: { v1Memory?: string; v2?: string } = {};
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const hierarchyId = line.slice(0, first);
    const controllers = line.slice(first + 1, second);
    const cgroupPath = line.slice(second + 1);
    if (hierarchyId === '0' && controllers === '') result.v2 = cgroupPath;
    else if (controllers.split(',').includes('memory')) result.v1Memory = cgroupPath;
  }
  return result;
}

/**
 * Finds the cgroup mounts in mountinfo. A cgroup2 mount counts only if its root lists the memory
 * controller: this machine mounts cgroup2 at /sys/fs/cgroup/unified with memory bound to v1.
 */
export function findCgroupMounts(procRoot = '/proc'): CgroupMounts {
  const mountinfoPath = path.join(procRoot, 'self', 'mountinfo');
  let text: string;
  try {
    text = fs.readFileSync(mountinfoPath, 'utf8');
  } catch (err) {
    throw new MemoryCgroupError('E_NO_CGROUP', `cannot read ${mountinfoPath}`, {}, err);
  }
  let v1Memory: string | undefined;
  let v2: string | undefined;
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const fields = line.slice(0, separator).split(' ');
    const [fsType, , superOptions = ''] = line.slice(separator + 3).split(' ');
    const mountPoint = fields[4];
    if (mountPoint === undefined) continue;
    if (fsType === 'cgroup' && superOptions.split(',').includes('memory')) v1Memory = mountPoint;
    if (fsType === 'cgroup2') {
      const controllersFile = path.join(mountPoint, 'cgroup.controllers');
      try {
        if (fs.readFileSync(controllersFile, 'utf8').split(/\s+/).includes('memory')) v2 = mountPoint;
      } catch {
        // An unreadable cgroup2 root offers no memory controller to us.
      }
    }
  }
  return { ...(v1Memory !== undefined ? { v1Memory } : {}), ...(v2 !== undefined ? { v2 } : {}) };
}

/** Parses "name value" lines (memory.stat, memory.events, memory.oom_control). */
export function parseFlatKeyed(text: string, source: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const [name, raw] = line.trim().split(/\s+/);
    if (name === undefined || raw === undefined) {
      throw new MemoryCgroupError('E_CGROUP_IO', `${source}: malformed line ${JSON.stringify(line)}`, { source });
    }
    values.set(name, parseCounter(raw, source));
  }
  return values;
}

function parseCounter(raw: string, source: string): number {
  if (!/^\d+$/.test(raw)) {
    throw new MemoryCgroupError('E_CGROUP_IO', `${source}: not a counter: ${JSON.stringify(raw)}`, { source });
  }
  return Number(raw);
}

function requireKey(stat: Map<string, number>, key: string, dir: string): number {
  const value = stat.get(key);
  if (value === undefined) {
    throw new MemoryCgroupError('E_CGROUP_IO', `${dir}/memory.stat has no ${key}`, { dir, key });
  }
  return value;
}

function formatLimit(bytes: number, version: CgroupVersion): string {
  if (bytes === Infinity) return version === 1 ? '-1' : 'max';
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new MemoryCgroupError('E_BAD_CONFIG', `a cgroup limit must be a non-negative integer of bytes, got ${bytes}`);
  }
  return String(bytes);
}
