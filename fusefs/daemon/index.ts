/** The node daemon: one process serving many mounts, its control API, recovery and cleanup. */
export { NodeDaemon, type NodeDaemonOptions, type RecoveryReport } from './daemon';
export { DaemonClient, type DaemonClientOptions } from './client';
export { MountPeer, type MountHandlers, type MountReading, type MountPeerOptions } from './mount-peer';
export { cleanupNodeDaemon, type CleanupReport } from './cleanup';
export { DaemonError, errorReply } from './errors';
export { SizedMemoryTier } from './memory-tier';
export { SizedDiskTier } from './disk-tier';
export { ManagedMount } from './managed-mount';
export { DEFAULT_STATE_DIR, daemonPaths, ensureSharedParent, checkSpillFilesystem, prepareSpillDir, type DaemonPaths } from './paths';
export { MountRecord, DaemonRecord, MountRecords, readRecords, readDaemonRecord, isDaemonAlive, writeJsonAtomic } from './state';
export {
  ControlRequest,
  AddMountRequest,
  MountId,
  parseControlLine,
  type ControlReply,
  type ControlRequestType,
  type ControlErrorCode,
  type ErrorReply,
  type OkReply,
  type MountStats,
  type EvictionReport,
} from './messages';
