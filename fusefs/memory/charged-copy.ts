import { type ChildProcessByStdio, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { MemoryCgroup } from './cgroup';
import { MemoryCgroupError } from './errors';

/**
 * Copies into the memory tier charged to a container's memory cgroup.
 *
 * The scheme: a page of a tmpfs/memfd file is charged to the memory cgroup of the process whose mm
 * faults it in. The daemon lives in its own cgroup, so a promotion (disk tier → memory tier copy) done
 * by the daemon would be charged to the daemon and escape the container's limit. Instead, one
 * `charged-copy` helper process per container cgroup joins that cgroup before touching memory and
 * does the copy; it takes the daemon's fds with pidfd_getfd(2) (see fuse-store/helper/charged-copy.c
 * for the wire format). The helper lives while there is work and exits `idleExitMs` after the last
 * copy, when its stdin closes.
 *
 * The caller keeps both fds open until `copy()` settles: the helper duplicates them when it gets to
 * the request, not when it is sent.
 */
export interface ChargedCopierOptions {
  /** Path of the built helper; default: `fuse-store/build/charged-copy` of this checkout, or $EPHEMERA_CHARGED_COPY. */
  readonly helperPath?: string;
  /** How long an idle helper is kept for the next copy. */
  readonly idleExitMs?: number;
  /** How long the helper may take to join the cgroup and say hello. */
  readonly startTimeoutMs?: number;
}

export interface CopyOptions {
  readonly srcOffset?: number;
  readonly dstOffset?: number;
}

const REQUEST_BYTES = 40;
const REPLY_BYTES = 16;

type Helper = ChildProcessByStdio<Writable, Readable, Readable>;

interface Pending {
  /** Which helper the request was written to; only that helper's exit fails it. */
  readonly generation: number;
  resolve(bytes: number): void;
  reject(error: Error): void;
}

interface RunningHelper {
  readonly child: Helper;
  readonly pid: number;
  readonly generation: number;
}

export class ChargedCopier {
  private static readonly byCgroup = new Map<string, ChargedCopier>();

  readonly cgroupDir: string;
  /** The helper binary (also run by the native core for allocating fallocates). */
  readonly helperPath: string;
  private readonly idleExitMs: number;
  private readonly startTimeoutMs: number;
  private helper: Promise<RunningHelper> | undefined;
  private readonly pending = new Map<bigint, Pending>();
  private nextId = 1n;
  private generation = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(cgroupDir: string, options: ChargedCopierOptions) {
    this.cgroupDir = cgroupDir;
    this.helperPath = options.helperPath ?? defaultHelperPath();
    this.idleExitMs = options.idleExitMs ?? 2_000;
    this.startTimeoutMs = options.startTimeoutMs ?? 5_000;
    for (const [name, value] of [
      ['idleExitMs', this.idleExitMs],
      ['startTimeoutMs', this.startTimeoutMs],
    ] as const) {
      if (!Number.isInteger(value) || value < 0) throw new MemoryCgroupError('E_BAD_CONFIG', `${name} must be an integer ≥ 0, got ${value}`);
    }
  }

  /** The copier of one memory cgroup; one per cgroup directory per process (options apply on first use). */
  static forCgroup(cgroupPath: string, options: ChargedCopierOptions = {}): ChargedCopier {
    const cgroup = MemoryCgroup.fromPath(cgroupPath);
    cgroup.close();
    const existing = ChargedCopier.byCgroup.get(cgroup.dir);
    if (existing !== undefined && !existing.closed) return existing;
    const copier = new ChargedCopier(cgroup.dir, options);
    ChargedCopier.byCgroup.set(cgroup.dir, copier);
    return copier;
  }

  /** Pid of the running helper, if one is running (for tests and diagnostics). */
  async helperPid(): Promise<number | undefined> {
    return this.helper === undefined ? undefined : (await this.helper).pid;
  }

  /**
   * Copies `length` bytes from `srcFd` to `dstFd` (fds of this process) at the given offsets, charged
   * to the cgroup. Resolves with the bytes copied (short only at the end of the source).
   */
  async copy(srcFd: number, dstFd: number, length: number, options: CopyOptions = {}): Promise<number> {
    if (this.closed) throw new MemoryCgroupError('E_CLOSED', `charged copier for ${this.cgroupDir} was closed`);
    const srcOffset = options.srcOffset ?? 0;
    const dstOffset = options.dstOffset ?? 0;
    for (const [name, value, max] of [
      ['srcFd', srcFd, 2 ** 31 - 1],
      ['dstFd', dstFd, 2 ** 31 - 1],
      ['length', length, Number.MAX_SAFE_INTEGER],
      ['srcOffset', srcOffset, Number.MAX_SAFE_INTEGER],
      ['dstOffset', dstOffset, Number.MAX_SAFE_INTEGER],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 0 || value > max) {
        throw new MemoryCgroupError('E_BAD_CONFIG', `${name} must be an integer in [0, ${max}], got ${value}`);
      }
    }
    this.cancelIdle();
    const { child, generation } = await this.ensureHelper();
    const id = this.nextId++;
    const request = Buffer.alloc(REQUEST_BYTES);
    request.writeBigUInt64LE(id, 0);
    request.writeInt32LE(srcFd, 8);
    request.writeInt32LE(dstFd, 12);
    request.writeBigUInt64LE(BigInt(srcOffset), 16);
    request.writeBigUInt64LE(BigInt(dstOffset), 24);
    request.writeBigUInt64LE(BigInt(length), 32);
    const result = new Promise<number>((resolve, reject) => this.pending.set(id, { generation, resolve, reject }));
    this.setRef(child, true);
    child.stdin.write(request);
    try {
      return await result;
    } finally {
      if (this.pending.size === 0) this.scheduleIdle();
    }
  }

  /** Ends the helper (after in-flight copies) and forgets this copier. */
  async close(): Promise<void> {
    this.closed = true;
    this.cancelIdle();
    if (ChargedCopier.byCgroup.get(this.cgroupDir) === this) ChargedCopier.byCgroup.delete(this.cgroupDir);
    await this.stopHelper();
  }

  private ensureHelper(): Promise<RunningHelper> {
    const started = (this.helper ??= this.startHelper());
    // A failed start is not cached: the next copy tries again.
    started.catch(() => {
      if (this.helper === started) this.helper = undefined;
    });
    return started;
  }

  private startHelper(): Promise<RunningHelper> {
    if (!fs.existsSync(this.helperPath)) {
      return Promise.reject(
        new MemoryCgroupError('E_HELPER', `charged-copy helper not built at ${this.helperPath} (run fuse-store/helper/build.sh)`, {
          helperPath: this.helperPath,
        }),
      );
    }
    const generation = ++this.generation;
    return new Promise<RunningHelper>((resolve, reject) => {
      const child = spawn(this.helperPath, [this.cgroupDir, String(process.pid)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      let buffered: Buffer = Buffer.alloc(0);
      let hello = false;
      const timeout = setTimeout(() => {
        child.kill('SIGKILL');
        fail(new MemoryCgroupError('E_HELPER', `charged-copy did not start within ${this.startTimeoutMs} ms`, { cgroup: this.cgroupDir }));
      }, this.startTimeoutMs);
      const fail = (error: MemoryCgroupError): void => {
        clearTimeout(timeout);
        if (!hello) reject(error);
      };
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => {
        stderr = (stderr + chunk).slice(-4096);
      });
      child.stdin.on('error', () => {
        // EPIPE after the helper died; the 'exit' handler reports it.
      });
      child.on('error', (err) => fail(new MemoryCgroupError('E_HELPER', `cannot spawn ${this.helperPath}`, { cgroup: this.cgroupDir }, err)));
      child.on('exit', (code, signal) => {
        const error = new MemoryCgroupError('E_HELPER', `charged-copy exited (${signal ?? code})${stderr ? `: ${stderr.trim()}` : ''}`, {
          cgroup: this.cgroupDir,
          code,
          signal,
        });
        fail(error);
        for (const [id, waiter] of this.pending) {
          if (waiter.generation !== generation) continue;
          this.pending.delete(id);
          waiter.reject(error);
        }
        if (this.generation === generation) this.helper = undefined;
      });
      child.stdout.on('data', (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        while (buffered.length >= REPLY_BYTES) {
          const id = buffered.readBigUInt64LE(0);
          const result = Number(buffered.readBigInt64LE(8));
          buffered = buffered.subarray(REPLY_BYTES);
          if (id === 0n) {
            clearTimeout(timeout);
            if (result < 0) {
              reject(new MemoryCgroupError('E_HELPER', `charged-copy could not join ${this.cgroupDir} (${errnoName(-result)})`, {
                cgroup: this.cgroupDir,
                errno: errnoName(-result),
              }));
              continue;
            }
            hello = true;
            this.verifyMembership(result)
              .then(() => {
                this.setRef(child, false);
                resolve({ child, pid: result, generation });
              })
              .catch((err: unknown) => {
                child.kill('SIGKILL');
                reject(err);
              });
            continue;
          }
          const waiter = this.pending.get(id);
          if (waiter === undefined) continue;
          this.pending.delete(id);
          if (result >= 0) waiter.resolve(result);
          else waiter.reject(new MemoryCgroupError('E_COPY', `charged copy failed (${errnoName(-result)})`, { errno: errnoName(-result), cgroup: this.cgroupDir }));
        }
      });
    });
  }

  /** The helper says it joined; the kernel's view of its membership is what counts. */
  private async verifyMembership(pid: number): Promise<void> {
    const actual = MemoryCgroup.fromPid(pid);
    actual.close();
    if (actual.dir !== this.cgroupDir) {
      throw new MemoryCgroupError('E_HELPER', `charged-copy ${pid} is in ${actual.dir}, not ${this.cgroupDir}`, { pid });
    }
  }

  private setRef(child: Helper, ref: boolean): void {
    // Pending copies keep the process alive; an idle helper must not.
    for (const handle of [child, child.stdout, child.stderr, child.stdin] as const) {
      const refable = handle as unknown as { ref?: () => void; unref?: () => void };
      if (ref) refable.ref?.();
      else refable.unref?.();
    }
  }

  private scheduleIdle(): void {
    this.cancelIdle();
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.pending.size === 0) void this.stopHelper();
    }, this.idleExitMs);
    this.idleTimer.unref();
    const running = this.helper;
    if (running !== undefined) {
      void running.then(({ child }) => {
        if (this.pending.size === 0) this.setRef(child, false);
      }, () => undefined);
    }
  }

  private cancelIdle(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private async stopHelper(): Promise<void> {
    const running = this.helper;
    if (running === undefined) return;
    // From here on a new copy starts a new helper instead of writing to this closing one.
    this.helper = undefined;
    this.generation += 1;
    let helper: RunningHelper;
    try {
      helper = await running;
    } catch {
      return;
    }
    const { child } = helper;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin.end();
    const killTimer = setTimeout(() => child.kill('SIGKILL'), 2_000);
    await exited;
    clearTimeout(killTimer);
  }
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

function defaultHelperPath(): string {
  const fromEnv = process.env['EPHEMERA_CHARGED_COPY'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  // Works from the sources (fusefs/memory) and from dist/fusefs/memory.
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'fuse-store', 'build', 'charged-copy');
    if (fs.existsSync(candidate)) return candidate;
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..', '..', 'fuse-store', 'build', 'charged-copy');
}
