/** The FUSE side for the layers above: the node daemon and its client, option sizes, errors, the CLI commands. */
export { FusefsError, isFusefsError, type FusefsErrorCode } from './errors';
export { parseSize } from './units';
export { isMountPoint } from './memtier';
export { NodeDaemon, DaemonClient, DaemonError, cleanupNodeDaemon, type ControlErrorCode } from './daemon/index';
export { registerFusefsCommands } from './commands';
