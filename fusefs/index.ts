/** The runtime daemon's public surface: mounts, errors, the native core's types. */
export { EphemeraMount, preflight, type MountOptions } from './mount';
export { FusefsError, isFusefsError, type FusefsErrorCode } from './errors';
export { loadCore, repoRoot, type NativeCounters, type NativeUsage, type NativeInodeStat, type MountMode, type TierName, type MoveResult, type MoveTicket, type PlacementRule } from './native';
export { parseSize, formatBytes } from './units';
export { MemoryTierMount, isMountPoint, listMountPoints, unmountQuietly } from './memtier';
export { DaemonMetrics, type MountMetricsSource } from './metrics';
export {
  NodeDaemon,
  DaemonClient,
  DaemonError,
  cleanupNodeDaemon,
  SizedMemoryTier,
  ControlRequest,
  parseControlLine,
  DEFAULT_STATE_DIR,
  daemonPaths,
  type NodeDaemonOptions,
  type RecoveryReport,
  type CleanupReport,
  type ControlReply,
  type ControlErrorCode,
  type MountStats,
  type EvictionReport,
} from './daemon/index';
export { CgroupBudget, type CgroupBudgetOptions, type CgroupUsage, type CgroupAlarm, type ShrinkResult } from './cgroup-budget';
export { TierKeeper, monotonicMs, toPolicyInode, type BudgetSpec, type FixedBudgetOptions, type KeeperTotals } from './tier-keeper';
