import type { Logger } from 'pino';
import { status } from '@grpc/grpc-js';
import { DaemonClient } from '../../fusefs/daemon/index';
import type { CsiConfig } from './config';
import { CsiError, errorMessage } from './errors';
import { CsiNode, type PublishRequest, type UnpublishRequest } from './node';
import { UnixGrpcServer, loadServices } from './server';
import { createLogger } from '../../log/index';

export interface CsiNodePluginOptions {
  config: CsiConfig;
  /** The node daemon's control socket. */
  daemonSocket: string;
  /** Size quota of a volume without `size` when the config gives no defaultSize (the node's --tmp-size). */
  defaultSizeQuota: number;
  logger?: Logger;
}

/** What kubelet said at its last NotifyRegistrationStatus; null until it calls. */
export interface RegistrationState {
  registered: boolean;
  error: string;
  at: string;
}

const VENDOR_VERSION = '0.1.0';
/** The CSI spec versions this plugin speaks, as kubelet's registration expects them. */
const SUPPORTED_VERSIONS = ['1.0.0'];

/**
 * The Kubernetes CSI node plugin of a node: the CSI socket (Identity and Node services) kubelet
 * calls, and the registration socket under kubelet's plugins_registry/ through which kubelet
 * finds it (no node-driver-registrar sidecar needed).
 */
export class CsiNodePlugin {
  private lastRegistration: RegistrationState | null = null;

  private constructor(
    readonly config: CsiConfig,
    readonly node: CsiNode,
    private readonly daemon: DaemonClient,
    private readonly log: Logger,
    private servers: UnixGrpcServer[] = [],
  ) {}

  static async start(opts: CsiNodePluginOptions): Promise<CsiNodePlugin> {
    const log = (opts.logger ?? createLogger('ephemera-csi', 'warn')).child({ driver: opts.config.driverName });
    const daemon = await DaemonClient.connect(opts.daemonSocket);
    const node = new CsiNode({ config: opts.config, daemon, defaultSizeQuota: opts.defaultSizeQuota, log });
    const plugin = new CsiNodePlugin(opts.config, node, daemon, log);
    try {
      const services = loadServices();
      // The CSI socket first: kubelet calls it as soon as registration tells it where it is.
      plugin.servers.push(
        await UnixGrpcServer.listen(opts.config.csiSocket, [
          { definition: services.identity, handlers: plugin.identityHandlers() },
          { definition: services.node, handlers: plugin.nodeHandlers() },
        ], log),
      );
      plugin.servers.push(await UnixGrpcServer.listen(opts.config.registrationSocket, [{ definition: services.registration, handlers: plugin.registrationHandlers() }], log));
      return plugin;
    } catch (e) {
      await plugin.close();
      throw e;
    }
  }

  get csiSocket(): string {
    return this.config.csiSocket;
  }
  get registrationSocket(): string {
    return this.config.registrationSocket;
  }
  get registration(): RegistrationState | null {
    return this.lastRegistration;
  }

  private identityHandlers() {
    return {
      GetPluginInfo: async () => ({ name: this.config.driverName, vendor_version: VENDOR_VERSION, manifest: { project: 'ephemera' } }),
      // No controller service (ephemeral volumes need none) and no topology constraints.
      GetPluginCapabilities: async () => ({ capabilities: [] }),
      Probe: async () => {
        const reply = await this.daemon.request({ type: 'ping' }).catch((e: unknown) => {
          throw new CsiError(status.FAILED_PRECONDITION, `the Ephemera node daemon does not answer: ${errorMessage(e)}`);
        });
        if (!reply.ok) throw new CsiError(status.FAILED_PRECONDITION, `the Ephemera node daemon: ${reply.message}`);
        return { ready: { value: true } };
      },
    };
  }

  private nodeHandlers() {
    return {
      NodeGetInfo: async () => ({ node_id: this.config.nodeId, max_volumes_per_node: '0' }),
      // Neither staging (nothing to attach) nor volume stats.
      NodeGetCapabilities: async () => ({ capabilities: [] }),
      NodePublishVolume: async (r: PublishRequest) => {
        await this.node.publish(r);
        return {};
      },
      NodeUnpublishVolume: async (r: UnpublishRequest) => {
        await this.node.unpublish(r);
        return {};
      },
    };
  }

  private registrationHandlers() {
    return {
      GetInfo: async () => ({ type: 'CSIPlugin', name: this.config.driverName, endpoint: this.config.csiSocket, supported_versions: SUPPORTED_VERSIONS }),
      NotifyRegistrationStatus: async (r: { plugin_registered: boolean; error: string }) => {
        this.lastRegistration = { registered: r.plugin_registered, error: r.error, at: new Date().toISOString() };
        if (r.plugin_registered) this.log.info('kubelet registered the CSI driver');
        else this.log.error({ error: r.error }, 'kubelet refused to register the CSI driver');
        return {};
      },
    };
  }

  /** Stops serving. Published volumes stay with the node daemon: kubelet unpublishes them after a restart. */
  async close(): Promise<void> {
    for (const s of this.servers.reverse()) await s.close().catch((e: unknown) => this.log.warn({ err: errorMessage(e) }, 'closing a socket'));
    this.servers = [];
    await this.node.idle();
    this.daemon.close();
  }
}
