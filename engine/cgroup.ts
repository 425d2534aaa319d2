import { readFile, rmdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { EngineError, errorMessage } from './errors';

/**
 * Memory cgroup (v1) of a container. The path comes from the container's init process, so it is
 * right for cgroupfs (`/docker/<id>`), the systemd driver (`/system.slice/docker-<id>.scope`) and a
 * custom `--cgroup-parent` alike; only when the process is already gone do we guess from the id.
 */
export interface MemoryMount {
  /** Where the hierarchy is mounted in our mount namespace. */
  mountPoint: string;
  /** The hierarchy path that the mount point shows (`/` unless a sub-tree is bind-mounted). */
  root: string;
}

export async function findMemoryMount(mountinfoPath = '/proc/self/mountinfo'): Promise<MemoryMount> {
  const text = await readFile(mountinfoPath, 'utf8');
  for (const line of text.split('\n')) {
    // id parent major:minor root mountpoint options [optional…] - fstype source superoptions
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const [fstype, , superOptions] = post.split(' ');
    if (fstype !== 'cgroup' || !superOptions?.split(',').includes('memory')) continue;
    const fields = pre.split(' ');
    const root = fields[3];
    const mountPoint = fields[4];
    if (root && mountPoint) return { root: unescapeMountinfo(root), mountPoint: unescapeMountinfo(mountPoint) };
  }
  throw new EngineError('E_CGROUP', 'no cgroup v1 memory hierarchy is mounted (this engine reads memory.stat and memory.oom_control)');
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The memory-controller line of `/proc/<pid>/cgroup`, joined onto the memory mount. */
export async function memoryCgroupOfPid(pid: number, mount?: MemoryMount): Promise<string> {
  const m = mount ?? (await findMemoryMount());
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/cgroup`, 'utf8');
  } catch (err) {
    throw new EngineError('E_CGROUP', `reading /proc/${pid}/cgroup: ${errorMessage(err)}`, { pid }, err);
  }
  for (const line of text.split('\n')) {
    const parsed = splitCgroupLine(line);
    if (!parsed) continue;
    const [, controllers, cgroupPath] = parsed;
    if (!controllers.split(',').includes('memory')) continue;
    return joinCgroupPath(m, cgroupPath);
  }
  throw new EngineError('E_CGROUP', `process ${pid} is in no memory cgroup`, { pid });
}

/** `hierarchy-id:controllers:path`; the path itself may contain colons. */
function splitCgroupLine(line: string): [string, string, string] | undefined {
  const first = line.indexOf(':');
  const second = line.indexOf(':', first + 1);
  if (first < 0 || second < 0) return undefined;
  return [line.slice(0, first), line.slice(first + 1, second), line.slice(second + 1)];
}

function joinCgroupPath(mount: MemoryMount, cgroupPath: string): string {
  // When the mount shows a sub-tree, the process's path is relative to the hierarchy root, so the
  // shown prefix has to come off before joining.
  let rel = cgroupPath;
  if (mount.root !== '/' && (rel === mount.root || rel.startsWith(`${mount.root}/`))) rel = rel.slice(mount.root.length);
  return path.join(mount.mountPoint, rel);
}

/** Candidate paths for a container whose init process is gone (cgroupfs and systemd naming). */
export function guessContainerCgroups(mount: MemoryMount, containerId: string): string[] {
  return [
    path.join(mount.mountPoint, 'docker', containerId),
    path.join(mount.mountPoint, 'system.slice', `docker-${containerId}.scope`),
  ];
}

/**
 * The Docker container id in its memory cgroup's directory name: `<id>` under the cgroupfs driver,
 * `docker-<id>.scope` under the systemd driver; undefined for anything else.
 */
export function containerIdOfCgroup(cgroupPath: string): string | undefined {
  return /^(?:docker-)?([0-9a-f]{64})(?:\.scope)?$/.exec(path.basename(cgroupPath))?.[1];
}

/**
 * Removes a container's memory cgroup that dockerd could not: a helper the /tmp provider ran in it
 * (charged copies) can outlive the container by a moment, and runc's rmdir then fails (EBUSY) and
 * is not retried. rmdir only ever succeeds on a cgroup without tasks or children; retried briefly.
 */
export async function removeLeftoverCgroup(cgroupPath: string | undefined, attempts = 20): Promise<void> {
  if (!cgroupPath) return;
  for (let i = 0; i < attempts && cgroupExists(cgroupPath); i++) {
    try {
      await rmdir(cgroupPath);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export function cgroupExists(cgroupPath: string): boolean {
  return existsSync(path.join(cgroupPath, 'memory.stat'));
}

/** `memory.stat` as numbers. On v1 the `total_*` fields include descendants. */
export async function readMemoryStat(cgroupPath: string): Promise<Map<string, number>> {
  const text = await readFile(path.join(cgroupPath, 'memory.stat'), 'utf8');
  const stat = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value] = line.split(' ');
    if (key && value) stat.set(key, Number(value));
  }
  return stat;
}

/**
 * Native memory of the cgroup: anonymous rss, without page cache and shmem (so a tmpfs or memfd
 * /tmp does not count as the function's own memory). v1 `total_rss` is exactly that.
 */
export async function readRssBytes(cgroupPath: string): Promise<number> {
  const stat = await readMemoryStat(cgroupPath);
  const rss = stat.get('total_rss') ?? stat.get('rss') ?? stat.get('anon');
  if (rss === undefined) throw new EngineError('E_CGROUP', `no rss field in ${cgroupPath}/memory.stat`);
  return rss;
}

/**
 * The kernel's count of OOM kills in this cgroup (`memory.oom_control`). Docker's `OOMKilled`
 * only looks at PID 1, so it is wrong both ways when the killed process is an exec'd invocation.
 */
export async function readOomKills(cgroupPath: string): Promise<number> {
  const text = await readFile(path.join(cgroupPath, 'memory.oom_control'), 'utf8');
  const m = /^oom_kill (\d+)$/m.exec(text);
  if (!m?.[1]) throw new EngineError('E_CGROUP', `no oom_kill counter in ${cgroupPath}/memory.oom_control (kernel older than 4.13?)`);
  return Number(m[1]);
}
