import * as path from 'node:path';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { FusefsError } from './errors';

/** Options of a native session (see fuse-store/src/session.cc). */
export interface NativeSessionOptions {
  mountpoint?: string;
  queues?: number;
  allowOther?: boolean;
  /** auto: passthrough where allowed, else writeback cache; none: no kernel features (unit tests). */
  mode?: 'auto' | 'passthrough' | 'writeback' | 'none';
  /** A directory on a huge=within_size tmpfs for the memory tier; empty: memfd. */
  memoryDir?: string;
  /** The disk tier. */
  spillDir?: string;
  rootMode?: number;
  rootUid?: number;
  rootGid?: number;
  entryTimeout?: number;
  attrTimeout?: number;
  flushEnosys?: boolean;
  /** Extended attributes (a GETXATTR round trip per write() unless killprivV2: see fs.h). Default off. */
  xattrs?: boolean;
  /** Negotiate FUSE_HANDLE_KILLPRIV_V2 (default true): the daemon clears setuid/setgid, the kernel sets SB_NOSEC. */
  killprivV2?: boolean;
  sizeQuota?: number;
  inodeQuota?: number;
  /** memoryDir is a tmpfs of this mount's own: resized so its room is what the quota leaves over both tiers. */
  memoryTierSized?: boolean;
  /** spillDir is a file system of this mount's own with `.quota-reserve` at its root: the reserve is sized the same way. */
  diskTierSized?: boolean;
  /** device: /dev/fuse loops; uring: FUSE over io_uring (mount fails if the kernel lacks it); auto: uring when offered. */
  transport?: TransportChoice;
  /** Ring entries per io_uring queue (one queue per possible CPU). */
  uringDepth?: number;
  /** Restartable mounts: the journal a successor loads (see fuse-store/src/journal.cc). */
  journal?: string;
  /** Restartable mounts: a dead daemon's store directory name to take over. */
  adoptStore?: string;
}

export type TransportChoice = 'auto' | 'device' | 'uring';
export const TRANSPORT_CHOICES: readonly TransportChoice[] = ['auto', 'device', 'uring'];

export type MountMode = 'passthrough' | 'writeback' | 'direct';

export interface NativeMountInfo {
  mode: MountMode;
  protoMinor: number;
  queues: number;
  mountpoint: string;
  connection: string;
  initialized: boolean;
  /** The transport actually serving requests (decided when INIT is answered). */
  transport: 'uring' | 'device' | 'none';
  uringQueues: number;
  /** Why io_uring is not used, when it was wanted and is not. */
  uringNote: string;
  /** FUSE_HANDLE_KILLPRIV_V2 agreed at INIT. */
  killprivV2: boolean;
  /** Restartable mounts only. */
  restart?: NativeRestartInfo;
}

export interface NativeRestartInfo {
  bytes: number;
  batches: number;
  loadedBatches: number;
  loadUs: number;
  /** Resent requests answered with the dead daemon's journaled reply (applied once, by it). */
  repliesReplayed: number;
  /** Resent requests the dead daemon had not journaled: applied now. */
  resendsApplied: number;
  orphansRemoved: number;
  /** Time spent writing batches, summed (divide by batches for the per-request cost). */
  commitNs: number;
  compactions: number;
  /** Resent requests answered EIO: they had been resent to 3 successors that each died. */
  resendsRefused: number;
  kernelHasResend: boolean;
  /** CLOCK_REALTIME ms of the first request an adopted connection served (0: none yet). */
  firstRequestMs: number;
  resendNote: string;
  store: string;
}

export interface HolderTaken {
  fds: number[];
  blob: string;
  conn: number;
}

export interface OpCount {
  count: number;
  errors: number;
}
export interface NativeCounters {
  ops: Record<string, OpCount>;
  unanswered: number;
  exceptions: number;
  malformed: number;
  /** Replies whose size broke the opcode table's reply layout (answered EIO instead): a handler bug. */
  badReplies: number;
  /** Allocating fallocates the daemon did itself although a container was attached (charged to the daemon). */
  unchargedFallocates: number;
  /** Opens under passthrough whose backing file the kernel refused (BACKING_OPEN): served through the daemon. */
  backingOpenFailures: number;
}
export interface NativeUsage {
  inodes: number;
  files: number;
  openFiles: number;
  bytesMemory: number;
  bytesDisk: number;
  /** Hard links beyond each file's first name: they count against the inode quota, as on tmpfs. */
  links: number;
  /** Names, symlink targets and xattrs held on the daemon's heap: they count against the size quota. */
  nameBytes: number;
  /** The quotas in force (0 given = tmpfs's defaults: half of RAM, half of RAM's pages). */
  sizeQuota: number;
  inodeQuota: number;
  filesMemory: number;
  filesDisk: number;
  openMemory: number;
  openDisk: number;
  /** Moves refused because a process still mapped the file. */
  movesRefusedMapped: number;
  /** Memory-tier files moved to disk before an OPEN for writing was answered. */
  demotedAtOpen: number;
  /** Such opens admitted in memory: another handle or a mapping held the file. */
  admittedUnmovable: number;
  /** Moves whose mapping check could not run (file leases off). */
  movesUnverified: number;
  fallocateTimeouts: number;
}
export interface NativeInodeStat {
  ino: number;
  generation: number;
  tier: 'memory' | 'disk';
  size: number;
  allocated: number;
  openCount: number;
  lastOpenMs: number;
  lastCloseMs: number;
  lastMoveMs: number;
}

export type TierName = 'memory' | 'disk';
export interface MoveTicket {
  token: number;
  srcFd: number;
  dstFd: number;
  size: number;
}
/**
 * An errno's name as the native core gives it (fuse-store/src/errno_names.h): Node's names and
 * the rarer ones Linux defines beside them (test/fusefs/boundary.test.ts checks the two lists agree).
 */
export type ErrnoName = keyof typeof os.constants.errno | LinuxOnlyErrnoName;
export type LinuxOnlyErrnoName =
  | 'ENOTBLK' | 'ECHRNG' | 'EL2NSYNC' | 'EL3HLT' | 'EL3RST' | 'ELNRNG' | 'EUNATCH' | 'ENOCSI' | 'EL2HLT'
  | 'EBADE' | 'EBADR' | 'EXFULL' | 'ENOANO' | 'EBADRQC' | 'EBADSLT' | 'EBFONT' | 'ENONET' | 'ENOPKG'
  | 'EREMOTE' | 'EADV' | 'ESRMNT' | 'ECOMM' | 'EDOTDOT' | 'ENOTUNIQ' | 'EBADFD' | 'EREMCHG' | 'ELIBACC'
  | 'ELIBBAD' | 'ELIBSCN' | 'ELIBMAX' | 'ELIBEXEC' | 'ERESTART' | 'ESTRPIPE' | 'EUSERS' | 'ESOCKTNOSUPPORT' | 'EPFNOSUPPORT'
  | 'ESHUTDOWN' | 'ETOOMANYREFS' | 'EHOSTDOWN' | 'EUCLEAN' | 'ENOTNAM' | 'ENAVAIL' | 'EISNAM' | 'EREMOTEIO' | 'ENOMEDIUM'
  | 'EMEDIUMTYPE' | 'ENOKEY' | 'EKEYEXPIRED' | 'EKEYREVOKED' | 'EKEYREJECTED' | 'EOWNERDEAD' | 'ENOTRECOVERABLE' | 'ERFKILL' | 'EHWPOISON'
  // A number Linux does not define comes out as E<number>.
  | `E${number}`;
export interface MoveResult {
  errno: number;
  /** OK, or the errno's name: EBUSY (open), EINPROGRESS (another move of it runs), EALREADY, ENOENT, ENOSPC… */
  code: 'OK' | ErrnoName;
  bytes: number;
}
export interface PlacementRule {
  /** Bytes the memory tier may hold before new files go to disk; omitted: unlimited. */
  memoryBudget?: number;
  /**
   * The room new files (and files reopened for writing) may take in memory; omitted: the budget.
   * 0: every new file on the disk tier. Decided by policy.placementAdmission.
   */
  newFileRoom?: number;
  /** What an open file may grow to (hint × safety factor): a new file goes to memory only if it and every open memory-tier file can each reach it within the room. */
  reservePerOpenFile?: number;
}

export interface NativeSession {
  mount(onStopped?: () => void): Promise<NativeMountInfo>;
  unmount(): void;
  /** Restartable mounts: stops serving, leaving the mount and its connection to the holder's successor (E_HANDOVER when it cannot). */
  handOver(timeoutMs?: number): void;
  /** After the loops stopped: frees every file's data and the store's directories now, not at GC. */
  releaseStore(): void;
  dispatch(request: Buffer): Buffer | null;
  counters(): NativeCounters;
  usage(): NativeUsage;
  inodeStats(): NativeInodeStat[];
  setQuotas(sizeBytes: number, inodes: number): void;
  info(): NativeMountInfo;
  setPlacement(rule: PlacementRule): void;
  /** Throws (code EBUSY/EALREADY/ENOENT) when the inode cannot move now. */
  beginMove(ino: number, to: TierName): MoveTicket;
  /** 0, or an errno: EBUSY when the inode was opened meanwhile (the move is abandoned). */
  commitMove(token: number): number;
  abortMove(token: number): void;
  moveNow(ino: number, to: TierName): Promise<MoveResult>;
  setOnClose(cb: ((ino: number, bytes: number, tier: TierName) => void) | null): void;
  tierBytes(): { memory: number; disk: number };
  /** Writes back the disk tier's dirty pages (so a lower cgroup v1 limit can reclaim them). */
  syncDiskTier(): Promise<number>;
  /** Allocating fallocates on the memory tier run in `helper --fallocate` inside `cgroupDir`; '' = the daemon. */
  setChargeAgent(agent: { helper: string; cgroupDir: string }): void;
  /** Hands the /dev/fuse files and store locks to the holder; returns how many were device files. */
  hold(socketPath: string, blob: string): number;
  /** Serves a dead daemon's connection with fds taken from its holder, after loading the journal. */
  adopt(taken: { fds: number[]; fuseCount: number; conn: number }, onStopped?: () => void): Promise<NativeMountInfo>;
}

export interface NativeCore {
  Session: new (opts: NativeSessionOptions) => NativeSession;
  detachMount(path: string): number;
  abortConnection(connection: string): number;
  mayPassthrough(): boolean;
  /** The errno's name from the native core's one table ("EINPROGRESS"), null for a number Linux does not define. */
  errnoName(errno: number): string | null;
  /** null when no holder listens on socketPath. */
  holderTake(socketPath: string, timeoutMs: number): HolderTaken | null;
  opcodeIndex: Record<string, number>;
  sys: Record<string, unknown>;
}

let cached: NativeCore | undefined;

/** The repository root (works from the TS sources under vitest and from dist/). */
export function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'fuse-store'))) return dir;
    dir = path.dirname(dir);
  }
  throw new FusefsError('E_NOT_BUILT', `cannot find the repository root above ${__dirname}`);
}

/** Loads the native addon once; a missing build is a clear error, not a stack trace. */
export function loadCore(): NativeCore {
  if (cached) return cached;
  const file = path.join(repoRoot(), 'fuse-store', 'build', 'Release', 'fuse_store.node');
  if (!fs.existsSync(file)) {
    throw new FusefsError('E_NOT_BUILT', `native core not built (${file}): run \`npm run build\``);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  cached = require(file) as NativeCore;
  return cached;
}
