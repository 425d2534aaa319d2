/** The node daemon: one process serving many mounts, its control API, recovery and cleanup. */
export { NodeDaemon } from './daemon';
export { DaemonClient } from './client';
export { MountPeer, type MountHandlers } from './mount-peer';
export { cleanupNodeDaemon } from './cleanup';
export { DaemonError, errorReply } from './errors';
export { SizedMemoryTier } from './memory-tier';
export { SizedDiskTier } from './disk-tier';
export { DEFAULT_STATE_DIR, daemonPaths, prepareSpillDir } from './paths';
export { writeJsonAtomic } from './state';
export { MountId, type ControlErrorCode } from './messages';
