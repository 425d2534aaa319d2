/** The Docker volume driver: `--mount type=volume,volume-driver=ephemera,dst=/tmp` on any container. */
export { VolumePlugin, type VolumePluginOptions } from './plugin';
export { VolumeDriver, mountIdOf, type VolumeRecord, type BoundContainer, type StartedContainer } from './driver';
export { parseVolumeOptions, type VolumeOptions } from './options';
export { ensureVolumeToken, tenantOfVolumeToken, volumeTokenDir } from './tokens';
export { VolumeError, isVolumeError, type VolumeErrorCode } from './errors';
export { PLUGIN_CONTENT_TYPE } from './protocol';
export { DOCKER_PLUGIN_DIR } from './server';
export { registerVolumeCommands } from './commands';
