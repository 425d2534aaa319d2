/**
 * `ephemera node`: the composition of a node (node daemon, engine with the Ephemera /tmp provider,
 * tenant managers, agent), with the Docker volume driver (volumes/) and the CSI node plugin (csi/).
 */
export { registerNodeCommands, openEphemeraTmp } from './commands';
export { EphemeraTmpProvider } from './ephemera-provider';
export { DockerTaskExecutor } from './docker-executor';
export { registerVolumeCommands } from './volumes/index';
