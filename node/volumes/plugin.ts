import * as path from 'node:path';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { DaemonClient } from '../../fusefs/daemon/index';
import type { TenantManager } from '../../manager/index';
import { DockerEventBinder } from './binder';
import { VolumeDriver } from './driver';
import { VolumeError, errorMessage } from './errors';
import { DOCKER_PLUGIN_DIR, PluginServer } from './server';
import { createLogger } from '../../log/index';

export interface VolumePluginOptions {
  /** `--mount …,volume-driver=<name>`. */
  name: string;
  /** The node daemon's control socket. */
  daemonSocket: string;
  /** The node's state dir (volume tokens, the driver's volume table). */
  stateDir: string;
  docker: Docker;
  defaultSizeQuota: number;
  managerOf?: (tenant: string) => Promise<TenantManager>;
  /** Default /run/docker/plugins (where dockerd looks). */
  pluginDir?: string;
  logger?: Logger;
}

const DRIVER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * The Docker volume driver of a node: the plugin socket, the driver's logic over the node
 * daemon, and the Docker event binder that ties each volume to its container's cgroup.
 */
export class VolumePlugin {
  private constructor(
    readonly driver: VolumeDriver,
    private readonly server: PluginServer,
    private readonly binder: DockerEventBinder,
    private readonly daemon: DaemonClient,
  ) {}

  static async start(opts: VolumePluginOptions): Promise<VolumePlugin> {
    if (!DRIVER_NAME.test(opts.name)) throw new VolumeError('E_BAD_OPTION', `volume driver name ${JSON.stringify(opts.name)} must match ${DRIVER_NAME.source}`);
    const log = (opts.logger ?? createLogger('ephemera-volumes', 'warn')).child({ driver: opts.name });
    let daemon: DaemonClient;
    try {
      daemon = await DaemonClient.connect(opts.daemonSocket);
    } catch (e) {
      throw new VolumeError('E_DAEMON', errorMessage(e), e);
    }
    const undo: Array<() => unknown> = [() => daemon.close()];
    try {
      const driver = await VolumeDriver.open({ name: opts.name, stateDir: opts.stateDir, daemon, defaultSizeQuota: opts.defaultSizeQuota, log, ...(opts.managerOf ? { managerOf: opts.managerOf } : {}) });
      // Events first: a container started between the socket appearing and the stream opening
      // would otherwise never be bound (bindRunning also catches those already running).
      const binder = await DockerEventBinder.start(opts.docker, driver, log);
      undo.push(() => binder.close());
      const server = await PluginServer.listen(path.join(opts.pluginDir ?? DOCKER_PLUGIN_DIR, `${opts.name}.sock`), (endpoint, body) => driver.handle(endpoint, body));
      return new VolumePlugin(driver, server, binder, daemon);
    } catch (e) {
      for (const step of undo.reverse()) await step();
      throw e;
    }
  }

  get socketPath(): string {
    return this.server.socketPath;
  }

  /** Waits until the bindings in flight and every volume's operations are done. */
  async idle(): Promise<void> {
    await this.binder.idle();
    await this.driver.idle();
  }

  /** Stops serving. The volumes' stores stay with the node daemon (and the table on disk) for the next start. */
  async close(): Promise<void> {
    await this.server.close();
    await this.binder.close();
    await this.driver.idle();
    this.daemon.close();
  }
}
