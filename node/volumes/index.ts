/** The Docker volume driver: `--mount type=volume,volume-driver=ephemera,dst=/tmp` on any container. */
export { VolumePlugin } from './plugin';
export { ensureVolumeToken } from './tokens';
export { VolumeError, isVolumeError, type VolumeErrorCode } from './errors';
export { registerVolumeCommands } from './commands';
