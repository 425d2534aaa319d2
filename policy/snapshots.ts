/**
 * The read-only snapshots every policy function takes. One unit everywhere: sizes in **bytes**
 * (integers), times in **milliseconds** of one monotonic clock chosen by the caller (the node daemon
 * uses its own uptime clock, the manager its own; the two are never compared). Snapshots are plain
 * data, safe to send over a link and to log; the policy never mutates them.
 */

// ---------------------------------------------------------------------------------------------
// Node daemon (fusefs/): one mount's store, for placement, eviction and promotion.

export type Tier = 'memory' | 'disk';

/** One inode of a mount's store, as the daemon's inode table sees it. */
export interface InodeStat {
  /** The daemon's inode number (unique within the mount). */
  readonly ino: number;
  /** Where the file's data lives now. */
  readonly tier: Tier;
  /** Logical size in bytes (what a move copies, and what eviction frees). */
  readonly sizeBytes: number;
  /** Open file handles right now; 0 = closed. */
  readonly openCount: number;
  /** Last open, ms; null if never opened since creation (creation counts as an open). */
  readonly lastOpenMs: number | null;
  /** Last close (openCount reaching 0), ms; null while never closed. */
  readonly lastCloseMs: number | null;
  /** Last move between tiers, ms; null if never moved. Drives the anti-thrash window. */
  readonly lastMoveMs: number | null;
  /** Mapped by a process while closed (a move would strand its writes); absent: not known to be. */
  readonly mapped?: boolean;
}

/** A mount's store and its container's memory, for the memory adapter. */
export interface StoreSnapshot {
  readonly nowMs: number;
  /** The container's memory cgroup limit now (changes when the manager lends). */
  readonly limitBytes: number;
  /** The cgroup's usage now; includes the memory tier, whose pages are charged to the writer. */
  readonly usageBytes: number;
  readonly inodes: readonly InodeStat[];
}

/** What the create path knows when it must choose a tier for a new file. */
export interface PlacementRequest {
  /** Expected final size (profile or declared), bytes; null when nothing is known. */
  readonly sizeHintBytes: number | null;
  /** Bytes the memory tier may hold in total (set by the adapter: limit − headroom − function usage). */
  readonly budgetBytes: number;
  /** Bytes the memory tier holds now. */
  readonly memoryTierBytes: number;
  /**
   * Page cache the disk tier's working set is owed inside the same budget (diskWorkingSetBytes);
   * 0 or absent where the page cache is not charged against the budget (a fixed budget).
   */
  readonly diskWorkingSetBytes?: number;
}

// ---------------------------------------------------------------------------------------------
// Tenant manager (manager/): the containers on one node, for pools, lending and the safeguard.

/** Result of the profiling run (thesis 4.4.1): peak native memory U and largest /tmp file F, bytes. */
export interface ContainerProfile {
  readonly peakMemoryBytes: number;
  readonly largestFileBytes: number;
}

export interface ContainerState {
  readonly id: string;
  readonly tenant: string;
  readonly function: string;
  /** Workflow the function belongs to; used only by the `workflow` pool scope. */
  readonly workflow: string;
  /** Current cgroup limit M_now (initial limit − lent + borrowed). */
  readonly limitBytes: number;
  /** The limit the platform gave the container, M_init. Pools are decided against it. */
  readonly initialLimitBytes: number;
  /** null until the profiling run has reported: such a container neither lends nor borrows. */
  readonly profile: ContainerProfile | null;
  /** An invocation is executing or queued (between "starts running" and "queue drains"). */
  readonly running: boolean;
  /** cgroup memory usage now. */
  readonly usageBytes: number;
  /** Of usageBytes, what the container's memory tier holds and eviction could move to disk. */
  readonly storeMemoryBytes: number;
  /** Set by the safeguard: until then the container is not harvested (it lends nothing). */
  readonly nonHarvestableUntilMs?: number | null;
}

/**
 * One open loan. Kept in one table at the snapshot level, not inside each container, so the two
 * sides can never disagree; a container's loans are the rows naming it.
 */
export interface Loan {
  readonly lender: string;
  readonly borrower: string;
  readonly bytes: number;
  /**
   * Set once a return was asked for (queue drained, alarm) but the borrower's own memory let only
   * part of it go; the loan then waits for `planRetryReturns`. Counts attempts so far.
   */
  readonly returnAttempts?: number;
}

export interface TenantSnapshot {
  readonly nowMs: number;
  readonly containers: readonly ContainerState[];
  readonly loans: readonly Loan[];
}

// ---------------------------------------------------------------------------------------------
// Cluster controller (controller/): node allocation state and tasks, for the scheduler.

/** Configured capacity of one node. */
export interface NodeSpec {
  readonly id: string;
  /** N_lim: memory the node may hand out as container limits. */
  readonly limitBytes: number;
}

/** A node's state: N_alloc and N_req are sums over the tasks placed on it. */
export interface NodeState extends NodeSpec {
  /** N_alloc: sum of the placed tasks' limits T_lim. */
  readonly allocBytes: number;
  /** N_req: sum of the placed tasks' profiled demand T_mem. */
  readonly reqBytes: number;
}

/** One invocation to place. */
export interface TaskSpec {
  readonly id: string;
  /** T_lim: the container's configured limit. */
  readonly limitBytes: number;
  /** T_mem: profiled demand, peak memory + largest file (raw, no safety factor, as in the original). */
  readonly memBytes: number;
}
