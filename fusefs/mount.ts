import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import type { CgroupBudget, CgroupBudgetOptions } from './cgroup-budget';
import { TierKeeper } from './tier-keeper';
import { FusefsError } from './errors';
import { isMountPoint, MEMORY_TIER_ROOT, MemoryTierMount, sweepDeadMemoryTiers } from './memtier';
import { adoptFromHolder, claimEarlyTakeover, restartPaths, sessionOptionsOf, startHolder, type HeldState, type RestartOptions, type RestartPaths } from './restart';
import {
  loadCore,
  type NativeCounters,
  type NativeInodeStat,
  type NativeMountInfo,
  type NativeSession,
  type NativeSessionOptions,
  type NativeUsage,
  type MoveResult,
  type MoveTicket,
  type PlacementRule,
  type TierName,
} from './native';

export interface MountOptions {
  mountpoint: string;
  allowOther?: boolean;
  queues?: number;
  mode?: NativeSessionOptions['mode'];
  /** Where the memory tier's private tmpfs is mounted; default: beside no one, under /run/ephemera. */
  memoryDir?: string;
  /** Use an existing memory-tier directory (the node daemon shares one tmpfs among mounts). */
  sharedMemoryDir?: string;
  spillDir?: string;
  sizeQuota?: number;
  inodeQuota?: number;
  /**
   * The quota over both tiers is enforced by each tier's own file system (see NativeSessionOptions).
   * Default: the memory tier when this mount makes its own and has a size quota; the disk tier never
   * (the node daemon passes it for its sized disk tier).
   */
  memoryTierSized?: boolean;
  diskTierSized?: boolean;
  rootMode?: number;
  rootUid?: number;
  rootGid?: number;
  /** Support xattrs (default off → ENOTSUP; a GETXATTR round trip per write() when killprivV2 is off). */
  xattrs?: boolean;
  /**
   * Negotiate FUSE_HANDLE_KILLPRIV_V2 (the daemon clears setuid/setgid; passthrough writes skip
   * file_remove_privs). Default on; EPHEMERA_KILLPRIV_V2=0 in the daemon's environment turns it off (A/B runs).
   */
  killprivV2?: boolean;
  /** /dev/fuse loops or FUSE over io_uring; default auto (see fuse-store/src/transport_uring.h). */
  transport?: NativeSessionOptions['transport'];
  /**
   * Survive this process's death (issue 14): a holder keeps the connection, a journal the table,
   * and the next open with `restart` on the same mount point takes over instead of mounting.
   */
  restart?: RestartOptions;
}

// Where options enter the TypeScript side: a wrong type, a value out of range or an unknown name is
// an E_BAD_OPTION naming the option, before any tier or mount is made (the native Session checks
// again at its boundary; a silent default used to turn `sizeQuota: "64M"` into unlimited).
const count = (max: number) => z.number().int().min(0).max(max);
const mountOptionsSchema = z.strictObject({
  mountpoint: z.string().min(1),
  allowOther: z.boolean().optional(),
  queues: z.number().int().min(1).max(16).optional(),
  mode: z.enum(['auto', 'passthrough', 'writeback', 'none']).optional(),
  memoryDir: z.string().min(1).optional(),
  sharedMemoryDir: z.string().min(1).optional(),
  spillDir: z.string().optional(),
  sizeQuota: count(Number.MAX_SAFE_INTEGER).optional(),
  inodeQuota: count(Number.MAX_SAFE_INTEGER).optional(),
  memoryTierSized: z.boolean().optional(),
  diskTierSized: z.boolean().optional(),
  rootMode: count(0o7777).optional(),
  rootUid: count(0xfffffffe).optional(),
  rootGid: count(0xfffffffe).optional(),
  xattrs: z.boolean().optional(),
  killprivV2: z.boolean().optional(),
  transport: z.enum(['auto', 'device', 'uring']).optional(),
  restart: z
    .strictObject({
      stateDir: z.string().min(1).optional(),
      holderTimeoutS: z.number().positive().optional(),
      holderCgroup: z.string().min(1).optional(),
      cgroupFs: z.string().min(1).optional(),
    })
    .optional(),
});

/** A failed mount as an FusefsError: ours keep their code, a native passthrough refusal too, the rest is E_MOUNT. */
function mountFailure(mountpoint: string, e: unknown): FusefsError {
  const err = e as Error & { code?: string };
  const code = err instanceof FusefsError ? err.code : err.code === 'E_PASSTHROUGH_REFUSED' ? err.code : 'E_MOUNT';
  return new FusefsError(code, `cannot mount ${mountpoint}: ${err.message}`);
}

/** Throws E_BAD_OPTION for the first option that is wrong, naming it and the value it got. */
export function checkMountOptions(opts: unknown): asserts opts is MountOptions {
  const r = mountOptionsSchema.safeParse(opts);
  if (r.success) return;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    throw new FusefsError('E_BAD_OPTION', `mount: unknown option ${issue.keys.join(', ')}`);
  }
  const name = issue.path.join('.');
  let got: unknown = opts;
  for (const k of issue.path) got = got !== null && typeof got === 'object' ? (got as Record<PropertyKey, unknown>)[k] : undefined;
  const shown = typeof got === 'string' ? JSON.stringify(got) : typeof got === 'object' && got !== null ? 'an object' : String(got);
  throw new FusefsError('E_BAD_OPTION', `mount option ${name || '(options)'}: ${issue.message}, got ${typeof got} ${shown}`);
}

/**
 * One mounted Ephemera file system. `EphemeraMount.open` resolves only after the kernel's INIT is
 * answered (no sleeps); `close` is idempotent; `stopped` settles when the native loops end, also
 * when the connection is aborted from outside.
 */
export class EphemeraMount {
  readonly stopped: Promise<void>;
  private closed = false;
  private tierKeeper: TierKeeper | undefined;

  private constructor(
    readonly mountpoint: string,
    readonly info: NativeMountInfo,
    private readonly session: NativeSession,
    private readonly memoryTier: MemoryTierMount | undefined,
    stopped: Promise<void>,
    /** Restartable mounts: the state directory, and whether this process took a connection over. */
    readonly restart?: { paths: RestartPaths; takeover: boolean },
  ) {
    this.stopped = stopped;
  }

  static async open(opts: MountOptions): Promise<EphemeraMount> {
    checkMountOptions(opts);
    const mountpoint = path.resolve(opts.mountpoint);
    if (opts.restart) return EphemeraMount.openRestartable(mountpoint, opts, opts.restart);
    preflight(mountpoint);
    const core = loadCore();
    if (!opts.sharedMemoryDir && !opts.memoryDir) sweepDeadMemoryTiers();
    const memoryTier = opts.sharedMemoryDir
      ? undefined
      : MemoryTierMount.create(opts.memoryDir ?? `${MEMORY_TIER_ROOT}/mem-${process.pid}-${sanitize(mountpoint)}`);
    const session = new core.Session({
      mountpoint,
      allowOther: opts.allowOther ?? false,
      queues: opts.queues ?? 2,
      mode: opts.mode ?? 'auto',
      memoryDir: opts.sharedMemoryDir ?? memoryTier?.dir ?? '',
      spillDir: opts.spillDir ?? '',
      sizeQuota: opts.sizeQuota ?? 0,
      inodeQuota: opts.inodeQuota ?? 0,
      memoryTierSized: opts.memoryTierSized ?? (memoryTier !== undefined && (opts.sizeQuota ?? 0) > 0),
      diskTierSized: opts.diskTierSized ?? false,
      rootMode: opts.rootMode ?? 0o1777,
      rootUid: opts.rootUid ?? 0,
      rootGid: opts.rootGid ?? 0,
      xattrs: opts.xattrs ?? false,
      killprivV2: opts.killprivV2 ?? process.env.EPHEMERA_KILLPRIV_V2 !== '0',
      transport: opts.transport ?? 'auto',
    });
    let onStopped!: () => void;
    const stopped = new Promise<void>((resolve) => (onStopped = resolve));
    try {
      const info = await session.mount(() => onStopped());
      return new EphemeraMount(mountpoint, info, session, memoryTier, stopped);
    } catch (e) {
      // A connection made and then refused (passthrough not offered at INIT) is already torn down
      // natively; unmount() makes sure, and the store goes now, not at GC.
      session.unmount();
      session.releaseStore();
      memoryTier?.close();
      throw mountFailure(mountpoint, e);
    }
  }

  /**
   * A live holder keeps this mount point's connection: take it over (no mount, no INIT; the
   * journal gives the table). Otherwise mount anew, journaled, and hand the connection to a new
   * holder. Before any stat of the mount point: with no daemon serving, a stat would wait for us.
   */
  private static async openRestartable(mountpoint: string, opts: MountOptions, restart: RestartOptions): Promise<EphemeraMount> {
    const core = loadCore();
    const paths = restartPaths(mountpoint, restart.stateDir);
    const adopted = await (claimEarlyTakeover(mountpoint, restart.stateDir) ?? adoptFromHolder(core, mountpoint, paths));
    if (adopted) {
      // A caller's memory tier (the node daemon's sized tmpfs) stays the caller's to close.
      const memoryTier = adopted.state.sharedMemoryTier ? undefined : MemoryTierMount.adopt(adopted.state.memoryDir);
      return new EphemeraMount(mountpoint, adopted.info, adopted.session, memoryTier, adopted.stopped, { paths, takeover: true });
    }
    let onStopped!: () => void;
    const stopped = new Promise<void>((resolve) => (onStopped = resolve));
    if (opts.transport === 'uring') throw new FusefsError('E_BAD_OPTION', 'a restartable mount serves /dev/fuse loops (an io_uring ring is not handed over yet)');
    preflight(mountpoint);
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const memoryTier = opts.sharedMemoryDir ? undefined : MemoryTierMount.create(paths.memoryDir);
    const memoryDir = opts.sharedMemoryDir ?? memoryTier!.dir;
    const timeoutS = restart.holderTimeoutS ?? 30;
    const state: HeldState = {
      version: 1,
      mountpoint,
      memoryDir,
      spillDir: opts.spillDir ?? '',
      journal: paths.journal,
      store: '',
      queues: opts.queues ?? 2,
      allowOther: opts.allowOther ?? false,
      mode: opts.mode ?? 'auto',
      xattrs: opts.xattrs ?? false,
      rootMode: opts.rootMode ?? 0o1777,
      rootUid: opts.rootUid ?? 0,
      rootGid: opts.rootGid ?? 0,
      sharedMemoryTier: opts.sharedMemoryDir !== undefined,
      memoryTierSized: opts.memoryTierSized ?? (memoryTier !== undefined && (opts.sizeQuota ?? 0) > 0),
      diskTierSized: opts.diskTierSized ?? false,
    };
    let session: NativeSession | undefined;
    try {
      // With no successor in time the holder detaches the tiers too: their files are unreachable.
      await startHolder(paths, timeoutS, [memoryDir, ...(opts.diskTierSized && opts.spillDir ? [opts.spillDir] : [])], restart);
      session = new core.Session({ ...sessionOptionsOf(state), sizeQuota: opts.sizeQuota ?? 0, inodeQuota: opts.inodeQuota ?? 0 });
      const info = await session.mount(() => onStopped());
      state.store = info.restart?.store ?? '';
      session.hold(paths.socket, JSON.stringify(state));
      return new EphemeraMount(mountpoint, info, session, memoryTier, stopped, { paths, takeover: false });
    } catch (e) {
      session?.unmount();
      session?.releaseStore();
      memoryTier?.close();
      throw mountFailure(mountpoint, e);
    }
  }

  get mode(): NativeMountInfo['mode'] {
    return this.info.mode;
  }
  /** The transport serving requests: 'uring' or 'device'. */
  get transport(): NativeMountInfo['transport'] {
    return this.info.transport;
  }
  counters(): NativeCounters {
    return this.session.counters();
  }
  usage(): NativeUsage {
    return this.session.usage();
  }
  inodeStats(): NativeInodeStat[] {
    return this.session.inodeStats();
  }
  setQuotas(sizeBytes: number, inodes: number): void {
    this.session.setQuotas(sizeBytes, inodes);
  }
  setPlacement(rule: PlacementRule): void {
    this.session.setPlacement(rule);
  }
  /** Moves a closed inode to `to` (copy in the daemon: use for spills). */
  moveNow(ino: number, to: TierName): Promise<MoveResult> {
    return this.session.moveNow(ino, to);
  }
  /** Two-phase move for copies done elsewhere (a promotion charged to the container's cgroup). */
  beginMove(ino: number, to: TierName): MoveTicket {
    return this.session.beginMove(ino, to);
  }
  commitMove(token: number): number {
    return this.session.commitMove(token);
  }
  abortMove(token: number): void {
    this.session.abortMove(token);
  }
  onClose(cb: ((ino: number, bytes: number, tier: TierName) => void) | null): void {
    this.session.setOnClose(cb);
  }
  tierBytes(): { memory: number; disk: number } {
    return this.session.tierBytes();
  }
  /** Where allocating fallocates on the memory tier run (see Filesystem::SetChargeAgent); empty: the daemon. */
  setChargeAgent(agent: { helper: string; cgroupDir: string }): void {
    this.session.setChargeAgent(agent);
  }
  syncDiskTier(): Promise<number> {
    return this.session.syncDiskTier();
  }

  /**
   * The one owner of this mount's tiers (placement, spills, promotions; the only user of onClose).
   * Idle until given a budget source (`keeper.use`, `attachCgroupBudget`).
   */
  get keeper(): TierKeeper {
    return (this.tierKeeper ??= new TierKeeper(this));
  }

  /**
   * Ties the mount to a memory cgroup: from now on the tier keeper keeps that cgroup's rss + shmem
   * under limit − headroom (see fusefs/cgroup-budget.ts). Attaching again replaces the budget.
   */
  attachCgroupBudget(opts: CgroupBudgetOptions): Promise<CgroupBudget> {
    return this.keeper.useCgroup(opts);
  }
  /** The cgroup budget in force, if the mount follows one. */
  get cgroupBudget(): CgroupBudget | undefined {
    return this.tierKeeper?.cgroup;
  }

  /** Unmounts (lazily, aborting the connection so no thread or caller can hang) and frees the tiers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tierKeeper?.close();
    this.session.unmount();
    await this.stopped;
    // Now, not when the session is garbage-collected (seconds later): until then the store's
    // directory fds kept the tiers' file systems alive after their lazy unmount, and every page
    // the files held stayed charged to the container that wrote them.
    this.session.releaseStore();
    this.memoryTier?.close();
    if (this.restart) fs.rmSync(this.restart.paths.dir, { recursive: true, force: true });
  }

  /**
   * Stops serving without unmounting, for an upgrade (issue 14): the keeper stops, the requests
   * already read are answered, and the connection, the tiers and every file stay with the holder
   * for the next process (`ephemera mount DIR --restartable` again, or the next node daemon), which
   * has nothing to resend. Only a restartable mount can; this object is done afterwards.
   */
  async handOver(timeoutMs = 10_000): Promise<void> {
    if (this.closed) throw new FusefsError('E_HANDOVER', 'the mount is closed');
    if (!this.restart) throw new FusefsError('E_HANDOVER', `${this.mountpoint} is not restartable: a hand-over would lose it (unmount it instead)`);
    this.closed = true;
    await this.tierKeeper?.close();
    this.session.handOver(timeoutMs);
  }

  /** Restart details (journal, resends, the first request an adopted connection served). */
  restartInfo(): NativeMountInfo['restart'] {
    return this.session.info().restart;
  }
}

/** CAP_SYS_ADMIN (bit 21) in this process's effective set, from /proc/self/status. */
function hasCapSysAdmin(): boolean {
  try {
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
    return hex === undefined || (BigInt(`0x${hex}`) & (1n << 21n)) !== 0n;
  } catch {
    return true; // no /proc to tell: let mount(2) answer
  }
}

function sanitize(p: string): string {
  return p.replace(/[^A-Za-z0-9]+/g, '_').slice(-48);
}

/**
 * Refuses clearly before touching the kernel: no /dev/fuse, a missing or non-directory mount
 * point, or one that is already a live mount. A dead FUSE mount left by a killed daemon
 * (stat → ENOTCONN) is detached first, so a restart recovers the path.
 */
export function preflight(mountpoint: string): void {
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    throw new FusefsError('E_NO_FUSE', '/dev/fuse is missing or not accessible (load the fuse module, or run the container with --device /dev/fuse)');
  }
  if (!hasCapSysAdmin()) {
    throw new FusefsError('E_NOT_ROOT', 'mounting needs CAP_SYS_ADMIN (the FUSE mount, the memory tier tmpfs, passthrough): run as root, or give the container --cap-add SYS_ADMIN');
  }
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(mountpoint);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') {
      loadCore().detachMount(mountpoint);
      st = fs.statSync(mountpoint, { throwIfNoEntry: false });
    }
    if (!st) throw new FusefsError('E_NO_MOUNTPOINT', `mount point ${mountpoint} does not exist`);
  }
  if (!st.isDirectory()) throw new FusefsError('E_NOT_DIRECTORY', `mount point ${mountpoint} is not a directory`);
  if (isMountPoint(mountpoint)) {
    throw new FusefsError('E_MOUNTPOINT_BUSY', `mount point ${mountpoint} is already a mount (unmount it first)`);
  }
}
