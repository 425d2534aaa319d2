/**
 * The node daemon's control messages: one zod schema per request and the reply shapes. The same
 * messages travel over the control socket (newline-delimited JSON) and, later, the tenant manager's
 * WebSocket link, so nothing here knows about transports. Objects are strict: an unknown field is an
 * error, never silently ignored, so a typo cannot leave a quota unset.
 */
import { z } from 'zod';
import type { ErrorCode } from '../../errors/index';

/** Mount ids name directories (mount point, spill dir, state record): no separators, no dot-dot. */
export const MountId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'mount id: 1-128 of [A-Za-z0-9_.-], not starting with . _ or -');

const Bytes = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const AbsolutePath = z.string().min(1).max(4096).refine((p) => p.startsWith('/') && !p.includes('\0'), 'an absolute path');

/** Optional request tag, echoed in the reply (replies also come back in request order). */
const Seq = z.union([z.number().int(), z.string().max(128)]).optional();

export const AddMountRequest = z
  .object({
    type: z.literal('add-mount'),
    seq: Seq,
    id: MountId,
    /** Default: `<mounts parent>/<id>` (a shared mount, so rslave binds see a remount). */
    path: AbsolutePath.optional(),
    /** Bytes the memory tier may hold; closed files beyond it are spilled to disk. */
    budget: Bytes,
    /** Bytes over both tiers; 0 = unlimited. */
    sizeQuota: Bytes,
    /** Inodes; 0 = unlimited. */
    inodeQuota: Bytes,
    /** Default: `<state dir>/spill/<id>`. Must be on a plain local file system (not overlayfs). */
    spillDir: AbsolutePath.optional(),
    owner: z.string().min(1).max(256),
    /** The container's memory cgroup: a cgroup budget is attached to the mount. */
    cgroup: AbsolutePath.optional(),
    /** Write new files on the disk tier and promote them on close (the profiling run uses this). */
    newFilesOnDisk: z.boolean().optional(),
  })
  .strict();

export const RemoveMountRequest = z.object({ type: z.literal('remove-mount'), seq: Seq, id: MountId }).strict();
export const SetBudgetRequest = z.object({ type: z.literal('set-budget'), seq: Seq, id: MountId, budget: Bytes }).strict();
export const SetQuotasRequest = z
  .object({ type: z.literal('set-quotas'), seq: Seq, id: MountId, sizeQuota: Bytes.optional(), inodeQuota: Bytes.optional() })
  .strict()
  .refine((m) => m.sizeQuota !== undefined || m.inodeQuota !== undefined, 'set-quotas needs sizeQuota and/or inodeQuota');
export const EvictRequest = z
  .object({
    type: z.literal('evict'),
    seq: Seq,
    id: MountId,
    bytes: Bytes,
    /** Also move inodes inside the anti-thrash window (an imminent OOM). */
    urgent: z.boolean().optional(),
  })
  .strict();
export const PromoteRequest = z.object({ type: z.literal('promote'), seq: Seq, id: MountId }).strict();
export const StatsRequest = z.object({ type: z.literal('stats'), seq: Seq, id: MountId.optional(), inodes: z.boolean().optional() }).strict();
export const ListRequest = z.object({ type: z.literal('list'), seq: Seq }).strict();
export const MetricsRequest = z.object({ type: z.literal('metrics'), seq: Seq }).strict();
export const PingRequest = z.object({ type: z.literal('ping'), seq: Seq }).strict();

/** Ties a mount to its container's memory cgroup once the container runs (its cgroup exists only then). */
export const AttachCgroupRequest = z
  .object({
    type: z.literal('attach-cgroup'),
    seq: Seq,
    id: MountId,
    cgroup: AbsolutePath,
    /** The function's profiled largest file, bytes: new files go straight to memory when 1.1× it fits. */
    sizeHint: Bytes.nullable().optional(),
    /** cgroup v1: pause the OOM killer at the limit and raise an alarm (1 s watchdog). */
    oomPause: z.boolean().optional(),
    /** The Docker container id: with it the mount joins its tenant manager's link (usage, alarms, shrink). */
    containerId: z.string().regex(/^[0-9a-f]{12,64}$/).optional(),
  })
  .strict();
/**
 * The container that used a mount is gone (a volume unmounted): its cgroup is no longer followed,
 * every closed memory-tier file moves to disk, and new files go to disk, so nothing stays charged
 * to a cgroup that is gone. A later attach-cgroup (a restart) takes the mount back.
 */
export const DetachCgroupRequest = z.object({ type: z.literal('detach-cgroup'), seq: Seq, id: MountId }).strict();
/** The manager will lower the container's limit: spill until usage fits, then answer ready or not. */
export const ShrinkRequest = z.object({ type: z.literal('shrink'), seq: Seq, id: MountId, targetLimit: Bytes }).strict();

export const ControlRequest = z.discriminatedUnion('type', [
  AttachCgroupRequest,
  DetachCgroupRequest,
  ShrinkRequest,
  AddMountRequest,
  RemoveMountRequest,
  SetBudgetRequest,
  SetQuotasRequest,
  EvictRequest,
  PromoteRequest,
  StatsRequest,
  ListRequest,
  MetricsRequest,
  PingRequest,
]);
export type ControlRequest = z.infer<typeof ControlRequest>;
export type ControlRequestType = ControlRequest['type'];
export type AddMountRequest = z.infer<typeof AddMountRequest>;

/** Stable error codes of the control API. */
export const CONTROL_ERROR_CODES = [
  'E_BAD_MESSAGE',
  'E_UNKNOWN_MOUNT',
  'E_EXISTS',
  'E_BAD_OPTION',
  'E_MOUNT',
  'E_NO_ADAPTER',
  'E_NO_CGROUP',
  'E_DAEMON',
  'E_MOUNTPOINT_BUSY',
  'E_NO_MOUNTPOINT',
  'E_NOT_DIRECTORY',
  'E_NO_FUSE',
  /** The manager named a container this mount's peer does not serve. */
  'E_UNKNOWN_CONTAINER',
] as const;
export type ControlErrorCode = (typeof CONTROL_ERROR_CODES)[number];

export interface ErrorReply {
  ok: false;
  seq?: number | string;
  /** One of CONTROL_ERROR_CODES, or the code of the mount, memory-cgroup or native error that failed. */
  code: ErrorCode;
  message: string;
}
export type OkReply<T extends object = object> = { ok: true; seq?: number | string } & T;
export type ControlReply = ErrorReply | OkReply<Record<string, unknown>>;

/** What `stats` tells about one mount. */
export interface MountStats {
  id: string;
  path: string;
  owner: string;
  mode: string;
  budget: number;
  sizeQuota: number;
  inodeQuota: number;
  spillDir: string;
  cgroup: string | null;
  /** The disk tier sits on a file system of the quota's size: open files get ENOSPC at the quota. */
  diskTierBounded: boolean;
  inodes: number;
  files: number;
  openFiles: number;
  bytes: { memory: number; disk: number };
  spills: number;
  spilledBytes: number;
  promotions: number;
  promotedBytes: number;
  /** Bytes over budget that stayed in memory because their files were open at the last enforcement. */
  overBudgetOpenBytes: number;
  /** Memory alarms the adapter raised (it could not get under the mark; sent to the tenant manager). */
  alarms: number;
  /** Per inode; last open/close on the daemon's monotonic clock (ms), null when never. */
  inodeTable?: Array<{ ino: number; tier: 'memory' | 'disk'; size: number; allocated: number; openCount: number; lastOpenMs: number | null; lastCloseMs: number | null }>;
}

/** The result of an eviction (evict, or a budget lowered): the tier keeper's report. */
export type { EvictionReport } from '../tier-keeper';

/**
 * Parses one line of the control protocol. Never throws: a line that is not JSON, or not a known
 * message, gives an error reply with the request's `seq` when it can be read.
 */
export function parseControlLine(line: string): { ok: true; request: ControlRequest } | { ok: false; reply: ErrorReply } {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (e) {
    return { ok: false, reply: { ok: false, code: 'E_BAD_MESSAGE', message: `not JSON: ${(e as Error).message}` } };
  }
  const seqOf = (v: unknown) => {
    const s = (v as { seq?: unknown } | null)?.seq;
    return typeof s === 'number' || typeof s === 'string' ? { seq: s } : {};
  };
  const parsed = ControlRequest.safeParse(raw);
  if (!parsed.success) {
    const type = (raw as { type?: unknown } | null)?.type;
    const known = ControlRequest.options.some((o) => o.shape.type.value === type);
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(message)'}: ${i.message}`).join('; ');
    return {
      ok: false,
      reply: {
        ok: false,
        ...seqOf(raw),
        code: 'E_BAD_MESSAGE',
        message: known ? `bad ${String(type)} message: ${detail}` : `unknown message type ${JSON.stringify(type ?? null)}`,
      },
    };
  }
  return { ok: true, request: parsed.data };
}
