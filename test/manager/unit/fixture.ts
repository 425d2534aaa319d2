// The tenant manager driven in memory: limits in an InMemoryLimitWriter (which refuses, like
// cgroup v1, a limit below the usage it was told about), invocations by a gate the test opens.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { InvocationResult } from '../../../engine/index';
import { InMemoryLimitWriter, ManagerError, TenantManager, type Invoker, type TenantManagerOptions } from '../../../manager/index';
import { DEFAULT_POLICY_CONFIG, MiB, scaled, type ContainerProfile } from '../../../policy/index';

export { MiB };
export { until } from '../../support/wait';
export const quiet = pino({ level: process.env.EPHEMERA_LOG_LEVEL ?? 'silent' });

/** Demand 4.4 MiB: well under 0.9 · any initial limit used here, so a harvest (lending) container. */
export const LENDER: ContainerProfile = { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 };
/** Demand 1.1 · 258 MiB = 283.8 MiB: above a 150 MiB initial limit, so an allocation (borrowing) container. */
export const BORROWER: ContainerProfile = { peakMemoryBytes: 2 * MiB, largestFileBytes: 256 * MiB };

/** What a container of `profile` at `initialBytes` borrows on start: its need, rounded up to the lending granularity. */
export function needOf(profile: ContainerProfile, initialBytes: number): number {
  const g = DEFAULT_POLICY_CONFIG.lending.granularityBytes;
  const need = scaled(profile.peakMemoryBytes, DEFAULT_POLICY_CONFIG) + scaled(profile.largestFileBytes, DEFAULT_POLICY_CONFIG) - initialBytes;
  return Math.ceil(need / g) * g;
}

export type WriteFault = (containerId: string, limitBytes: number, nth: number) => Error | undefined;

/**
 * The in-memory writer with the faults a real node shows: a write refused (`fault`), and a kernel
 * that enforces something else than was written (`clamp`: what `read` reports instead). `log` is
 * every accepted write, in order, as the kernel would have seen it.
 */
export class ScriptedWriter extends InMemoryLimitWriter {
  readonly log: Array<[string, number]> = [];
  fault: WriteFault | undefined;
  clamp: ((containerId: string, written: number) => number) | undefined;
  /** Awaited before each write: a slow Docker update, so a test can queue work behind a running plan. */
  gate: Promise<void> | undefined;
  private attempts = 0;

  override async write(containerId: string, limitBytes: number): Promise<void> {
    this.attempts += 1;
    if (this.gate) await this.gate;
    const err = this.fault?.(containerId, limitBytes, this.attempts);
    if (err) throw err;
    await super.write(containerId, limitBytes);
    this.log.push([containerId, limitBytes]);
  }

  override async read(containerId: string): Promise<number> {
    const v = await super.read(containerId);
    return this.clamp ? this.clamp(containerId, v) : v;
  }
}

/** A writer that also raises in "the kernel" at once, as DockerLimitWriter does through the cgroup. */
export class RaisingWriter extends ScriptedWriter {
  readonly raisedNow: Array<[string, number]> = [];
  async raiseNow(containerId: string, limitBytes: number): Promise<void> {
    this.raisedNow.push([containerId, limitBytes]);
    if (limitBytes > (this.limits.get(containerId) ?? 0)) this.limits.set(containerId, limitBytes);
  }
}

export function refused(containerId: string, limitBytes: number): ManagerError {
  return new ManagerError('E_LIMIT_WRITE', `refused ${limitBytes} for ${containerId}`, { containerId, limitBytes });
}

/** An invoker whose runs end when the test says: `seen` holds the limit each run started under. */
export class GateInvoker implements Invoker {
  readonly seen: number[] = [];
  private readonly waiting: Array<(r: InvocationResult) => void> = [];
  private readonly failing: Array<(e: unknown) => void> = [];
  constructor(
    private readonly writer: InMemoryLimitWriter,
    private readonly id: string,
  ) {}

  invoke(): Promise<InvocationResult> {
    this.seen.push(this.writer.limits.get(this.id) ?? -1);
    return new Promise((resolve, reject) => {
      this.waiting.push(resolve);
      this.failing.push(reject);
    });
  }

  get started(): number {
    return this.seen.length;
  }

  finish(exitCode = 0): void {
    this.failing.shift();
    this.waiting.shift()?.({ stdout: 'ok', stderr: '', exitCode, wallMs: 1, oomKills: 0 });
  }

  fail(err: unknown): void {
    this.waiting.shift();
    this.failing.shift()?.(err);
  }
}

export interface Harness {
  readonly writer: ScriptedWriter;
  readonly stateDir: string;
  readonly managers: TenantManager[];
  open(extra?: Partial<TenantManagerOptions>): Promise<TenantManager>;
  /** Adds a container whose kernel limit starts at `limitBytes` (default: its initial limit). */
  add(m: TenantManager, id: string, initialBytes: number, profile: ContainerProfile | null, opts?: { limitBytes?: number; usageBytes?: number; cgroupPath?: string }): Promise<GateInvoker>;
  /** A fake v1 memory cgroup dir whose memory.stat says rss + shmem = `bytes`. */
  cgroup(name: string, bytes: number): Promise<string>;
  cleanup(): Promise<void>;
}

export async function harness(writer: ScriptedWriter = new ScriptedWriter()): Promise<Harness> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-manager-unit-'));
  const managers: TenantManager[] = [];
  return {
    writer,
    stateDir,
    managers,
    async open(extra = {}) {
      const m = await TenantManager.open({ tenant: 'acme', stateDir, limitWriter: writer, listen: false, logger: quiet, retryReturnsAfterMs: 50, ...extra });
      managers.push(m);
      return m;
    },
    async add(m, id, initialBytes, profile, opts = {}) {
      writer.limits.set(id, opts.limitBytes ?? initialBytes);
      if (opts.usageBytes !== undefined) writer.usage.set(id, opts.usageBytes);
      const invoker = new GateInvoker(writer, id);
      await m.addContainer({ id, tenant: m.tenant, function: id, initialLimitBytes: initialBytes, profile, invoker, ...(opts.cgroupPath ? { cgroupPath: opts.cgroupPath } : {}) });
      return invoker;
    },
    async cgroup(name, bytes) {
      const dir = path.join(stateDir, 'cgroups', name);
      await setCgroupUsage(dir, bytes);
      return dir;
    },
    async cleanup() {
      for (const m of managers.splice(0)) await m.close().catch(() => undefined);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Rewrites a fake cgroup's memory.stat (the manager reads total_rss + total_shmem). */
export async function setCgroupUsage(dir: string, bytes: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  const rss = Math.floor(bytes / 2);
  await writeFile(path.join(dir, 'memory.stat'), `cache 0\nrss 0\ntotal_cache 4096\ntotal_rss ${rss}\ntotal_shmem ${bytes - rss}\ntotal_mapped_file 0\n`);
}
