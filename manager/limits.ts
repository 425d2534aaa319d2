import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import { memoryCgroupOfPid } from '../engine/index';
import { ManagerError } from './errors';

/**
 * The only way the manager changes a container's memory limit. `read` must report what the kernel
 * enforces, not what was asked for: the executor checks every step against it.
 */
export interface LimitWriter {
  write(containerId: string, limitBytes: number): Promise<void>;
  read(containerId: string): Promise<number>;
  /**
   * Raises the limit in the kernel at once, before `write` records it with the engine (which takes
   * ~35 ms idle, much more on a loaded node). Only ever for raises: a raise cannot fail for usage,
   * and a task stalled at its limit is waiting for exactly this.
   */
  raiseNow?(containerId: string, limitBytes: number): Promise<void>;
}

/**
 * Docker `update` with Memory and MemorySwap together (swap stays off: the limit is the limit), read
 * back from the container's v1 cgroup `memory.limit_in_bytes`. cgroup v1 refuses a limit below usage;
 * Docker reports that as a 500, surfaced here as E_LIMIT_WRITE.
 */
export class DockerLimitWriter implements LimitWriter {
  private readonly cgroups = new Map<string, string>();

  constructor(private readonly docker: Docker) {}

  async write(containerId: string, limitBytes: number): Promise<void> {
    try {
      await this.docker.getContainer(containerId).update({ Memory: limitBytes, MemorySwap: limitBytes });
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      const reason = (err as { json?: { message?: string } }).json?.message ?? (err as Error).message;
      throw new ManagerError('E_LIMIT_WRITE', `docker update ${containerId.slice(0, 12)} to ${limitBytes} B: ${status ?? ''} ${reason}`.trim(), { status, containerId, limitBytes }, err);
    }
  }

  async raiseNow(containerId: string, limitBytes: number): Promise<void> {
    const dir = await this.cgroupOf(containerId);
    const current = Number((await readFile(path.join(dir, 'memory.limit_in_bytes'), 'utf8')).trim());
    if (limitBytes <= current) return;
    try {
      // memory+swap must stay ≥ memory on v1, so it goes up first (Docker keeps them equal: no swap).
      const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
      if (await writeFile(memsw, String(limitBytes)).then(() => true, () => false)) {
        await writeFile(path.join(dir, 'memory.limit_in_bytes'), String(limitBytes));
      } else {
        await writeFile(path.join(dir, 'memory.limit_in_bytes'), String(limitBytes));
      }
    } catch (err) {
      throw new ManagerError('E_LIMIT_WRITE', `raising ${containerId.slice(0, 12)} to ${limitBytes} B in its cgroup: ${(err as Error).message}`, { containerId, limitBytes }, err);
    }
  }

  async read(containerId: string): Promise<number> {
    const text = await readFile(path.join(await this.cgroupOf(containerId), 'memory.limit_in_bytes'), 'utf8').catch((err: unknown) => {
      this.cgroups.delete(containerId);
      throw new ManagerError('E_LIMIT_WRITE', `reading the limit of ${containerId.slice(0, 12)}: ${(err as Error).message}`, { containerId }, err);
    });
    return Number(text.trim());
  }

  /** The container's memory cgroup directory (cached: it does not move while the container lives). */
  async cgroupOf(containerId: string): Promise<string> {
    const cached = this.cgroups.get(containerId);
    if (cached) return cached;
    let pid: number;
    try {
      pid = (await this.docker.getContainer(containerId).inspect()).State.Pid;
    } catch (err) {
      throw new ManagerError('E_UNKNOWN_CONTAINER', `docker inspect ${containerId.slice(0, 12)}: ${(err as Error).message}`, { containerId }, err);
    }
    if (!pid) throw new ManagerError('E_UNKNOWN_CONTAINER', `container ${containerId.slice(0, 12)} is not running`, { containerId });
    const dir = await memoryCgroupOfPid(pid);
    this.cgroups.set(containerId, dir);
    return dir;
  }
}

/**
 * Limits kept in memory only: for dry runs and for measuring the manager's own decision time with
 * Docker excluded (bench `mix`). Refuses, like v1, a limit below the usage it was told about.
 */
export class InMemoryLimitWriter implements LimitWriter {
  readonly limits = new Map<string, number>();
  readonly usage = new Map<string, number>();
  writes = 0;

  async write(containerId: string, limitBytes: number): Promise<void> {
    if ((this.usage.get(containerId) ?? 0) > limitBytes) {
      throw new ManagerError('E_LIMIT_WRITE', `limit ${limitBytes} below usage of ${containerId}`, { containerId, limitBytes });
    }
    this.writes += 1;
    this.limits.set(containerId, limitBytes);
  }

  async read(containerId: string): Promise<number> {
    const v = this.limits.get(containerId);
    if (v === undefined) throw new ManagerError('E_UNKNOWN_CONTAINER', `no limit recorded for ${containerId}`, { containerId });
    return v;
  }
}
