import { createHash } from 'node:crypto';
import path from 'node:path';
import { z } from 'zod';
import { messageSet } from './messages';
import { assertTenantName } from './token';

/**
 * The store link: the node daemon's mounts ⇄ their tenant's manager. Container ids are Docker ids;
 * sizes are bytes. A mount reports; the manager alone decides limits and tells the mount its budget.
 */
const containerId = z.string().min(1).max(128);
const bytes = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const requestId = z.string().min(1).max(128);

// --- mount → manager -------------------------------------------------------------------------

/** The container's memory as the mount's adapter reads it, and the store's share of it. */
export const UsageMessage = z.object({
  type: z.literal('usage'),
  containerId,
  /** Bytes on the memory tier (evictable). */
  memoryBytes: bytes,
  /** Bytes on the disk tier. */
  diskBytes: bytes,
  /** The container's usage (rss + shmem, the adapter's reading). */
  usageBytes: bytes,
  /** The limit the mount believes in (the manager corrects it with a budget if it differs). */
  limitBytes: bytes,
});

/** Eviction cannot keep the container under its mark; `oomPaused` = its OOM killer waits for us. */
export const AlarmMessage = z.object({
  type: z.literal('alarm'),
  containerId,
  shortfallBytes: bytes,
  oomPaused: z.boolean(),
});

/** The answer to evict/shrink: done evicting; usage now. */
export const ShrinkReadyMessage = z.object({
  type: z.literal('shrink-ready'),
  containerId,
  requestId,
  usageBytes: bytes,
});

/** Store statistics of one mount, for status and metrics. */
export const StatsMessage = z.object({
  type: z.literal('stats'),
  containerId,
  inodes: z.number().int().nonnegative(),
  memoryBytes: bytes,
  diskBytes: bytes,
  spills: z.number().int().nonnegative(),
  promotions: z.number().int().nonnegative(),
});

/** From a control peer (`ephemera manager status`), not from mounts. */
export const StatusRequestMessage = z.object({ type: z.literal('status'), requestId });

/** From a control peer (`ephemera manager metrics`): the manager's Prometheus registry as text. */
export const MetricsRequestMessage = z.object({ type: z.literal('metrics'), requestId });

// --- manager → mount -------------------------------------------------------------------------

/** The container's limit is now `limitBytes`: the mount's memory budget follows it. */
export const BudgetMessage = z.object({ type: z.literal('budget'), containerId, limitBytes: bytes });

/** Move at least `bytes` of the memory tier to disk, then answer shrink-ready. */
export const EvictMessage = z.object({ type: z.literal('evict'), containerId, bytes, requestId });

/** The limit is about to go down to `targetLimitBytes`: evict until usage fits under it with headroom, then answer shrink-ready. */
export const ShrinkMessage = z.object({ type: z.literal('shrink'), containerId, targetLimitBytes: bytes, requestId });

export const ContainerStatusSchema = z.object({
  id: z.string(),
  function: z.string(),
  workflow: z.string(),
  pool: z.enum(['harvest', 'allocation', 'self-sufficient']),
  running: z.boolean(),
  queued: z.number().int(),
  initialLimitBytes: z.number(),
  limitBytes: z.number(),
  usageBytes: z.number(),
  storeMemoryBytes: z.number(),
  storeDiskBytes: z.number(),
  mountConnected: z.boolean(),
  nonHarvestableUntilMs: z.number().nullable(),
  profile: z.object({ peakMemoryBytes: z.number(), largestFileBytes: z.number() }).nullable(),
});
export type ContainerStatus = z.infer<typeof ContainerStatusSchema>;

export const ManagerStatusSchema = z.object({
  tenant: z.string(),
  pid: z.number().int(),
  uptimeMs: z.number(),
  sharing: z.boolean(),
  containers: z.array(ContainerStatusSchema),
  loans: z.array(z.object({ lender: z.string(), borrower: z.string(), bytes: z.number(), returnAttempts: z.number().optional() })),
  plans: z.object({ executed: z.number().int(), rolledBack: z.number().int(), inconsistent: z.number().int() }),
  mounts: z.number().int(),
});
export type ManagerStatus = z.infer<typeof ManagerStatusSchema>;

export const StatusReplyMessage = z.object({ type: z.literal('status-reply'), requestId, status: ManagerStatusSchema });

export const MetricsReplyMessage = z.object({ type: z.literal('metrics-reply'), requestId, contentType: z.string(), text: z.string() });

export const ToManager = messageSet(UsageMessage, AlarmMessage, ShrinkReadyMessage, StatsMessage, StatusRequestMessage, MetricsRequestMessage);
export const ToMount = messageSet(BudgetMessage, EvictMessage, ShrinkMessage, StatusReplyMessage, MetricsReplyMessage);
export type ToManagerMessage = z.infer<typeof ToManager.schema>;
export type ToMountMessage = z.infer<typeof ToMount.schema>;

/**
 * The store link's messages as one named family, for the node daemon. `fromMount` is what a mount
 * may send, `toMount` what the manager sends it.
 */
export const StoreLinkMessages = { fromMount: ToManager, toMount: ToMount } as const;

/** sun_path holds 108 bytes with the terminating NUL: a Unix socket path is at most 107. */
const SOCKET_PATH_MAX = 107;

/**
 * The manager of `tenant` listens here unless told otherwise (a Unix socket, mode 0600), and a
 * mount finds it here. A state dir too deep for a socket path gets a short path derived from it
 * (the same on both ends of the link) under /run/ephemera/sockets.
 */
export function managerSocketPath(stateDir: string, tenant: string): string {
  assertTenantName(tenant);
  const natural = path.join(stateDir, 'managers', `${tenant}.sock`);
  if (Buffer.byteLength(natural) <= SOCKET_PATH_MAX) return natural;
  const id = createHash('sha256').update(`${path.resolve(stateDir)}\0${tenant}`).digest('hex').slice(0, 24);
  return path.join('/run/ephemera/sockets', `${id}.sock`);
}

export function managersDir(stateDir: string): string {
  return path.join(stateDir, 'managers');
}
