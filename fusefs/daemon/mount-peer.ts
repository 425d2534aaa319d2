import type { Logger } from 'pino';
import {
  LinkClient,
  managerSocketPath,
  readTenantToken,
  ToManager,
  ToMount,
  type EndpointInput,
  type HeartbeatOptions,
  type LinkErrorReply,
  type ReconnectOptions,
  type ToManagerMessage,
  type ToMountMessage,
} from '../../link/index';
import { DaemonError } from './errors';

/** A mount's reading of its container, sent as `usage`. */
export interface MountReading {
  memoryBytes: number;
  diskBytes: number;
  usageBytes: number;
  limitBytes: number;
}

/** What a mount does for the manager; the node daemon implements it with its store and cgroup budget. */
export interface MountHandlers {
  /** The current reading; sent on attach, on every (re)connection and by `reportUsage`. */
  read(): MountReading | Promise<MountReading>;
  /** The container's limit changed: the memory budget follows. */
  onBudget(limitBytes: number): void | Promise<void>;
  /** Move at least `bytes` of the memory tier to disk; resolve with the usage afterwards. */
  evict(bytes: number): Promise<number>;
  /** Evict until the container fits under `targetLimitBytes` with headroom; resolve with the usage afterwards. */
  shrink(targetLimitBytes: number): Promise<number>;
}

export interface MountPeerOptions {
  tenant: string;
  /** Read from `<stateDir>/tokens/<tenant>.token` when absent (then `stateDir` is required). */
  token?: string;
  stateDir?: string;
  /** `<stateDir>/managers/<tenant>.sock` when absent. */
  endpoint?: EndpointInput;
  peerId?: string;
  logger?: Logger;
  reconnect?: Partial<ReconnectOptions> | false;
  heartbeat?: Partial<HeartbeatOptions>;
  /** The manager refused something we sent. */
  onManagerError?: (error: LinkErrorReply) => void;
}

/**
 * What a mount (the node daemon, for each of its mounts) runs to talk to its tenant's manager. One
 * peer carries any number of containers of one tenant. After every (re)connection it resends every
 * container's reading, so a restarted manager rebuilds its view from us, and a manager that kept
 * running learns we are back; the manager answers with budgets.
 */
export class MountPeer {
  private readonly containers = new Map<string, MountHandlers>();
  readonly link: LinkClient<ToMountMessage, ToManagerMessage>;

  private constructor(options: MountPeerOptions, token: string, endpoint: EndpointInput) {
    this.link = new LinkClient<ToMountMessage, ToManagerMessage>({
      endpoint,
      tenant: options.tenant,
      token,
      role: 'mount',
      ...(options.peerId === undefined ? {} : { peerId: options.peerId }),
      inbound: ToMount,
      outbound: ToManager,
      ...(options.reconnect === undefined ? {} : { reconnect: options.reconnect }),
      ...(options.heartbeat === undefined ? {} : { heartbeat: options.heartbeat }),
      ...(options.logger === undefined ? {} : { logger: options.logger }),
      ...(options.onManagerError === undefined ? {} : { onPeerError: options.onManagerError }),
      onMessage: (m) => this.handle(m),
      onResync: () => this.resync(),
    });
  }

  static async connect(options: MountPeerOptions): Promise<MountPeer> {
    if (options.token === undefined && options.stateDir === undefined) {
      throw new DaemonError('E_BAD_OPTION', 'MountPeer needs a token or a stateDir to read it from');
    }
    const token = options.token ?? (await readTenantToken(options.stateDir!, options.tenant));
    const endpoint = options.endpoint ?? { socketPath: managerSocketPath(options.stateDir!, options.tenant) };
    const peer = new MountPeer(options, token, endpoint);
    await peer.link.start();
    return peer;
  }

  get connected(): boolean {
    return this.link.connected;
  }

  /** Starts speaking for a container and reports it at once (when connected). */
  async attach(containerId: string, handlers: MountHandlers): Promise<void> {
    this.containers.set(containerId, handlers);
    if (this.link.connected) await this.reportUsage(containerId);
  }

  detach(containerId: string): void {
    this.containers.delete(containerId);
  }

  async reportUsage(containerId: string): Promise<void> {
    const h = this.handlersOf(containerId);
    const r = await h.read();
    this.link.send({ type: 'usage', containerId, ...r });
  }

  /** A memory alarm: eviction cannot keep up (or the OOM killer is paused and waits for a loan). */
  alarm(containerId: string, shortfallBytes: number, oomPaused: boolean): void {
    this.link.send({ type: 'alarm', containerId, shortfallBytes, oomPaused });
  }

  stats(containerId: string, s: { inodes: number; memoryBytes: number; diskBytes: number; spills: number; promotions: number }): void {
    this.link.send({ type: 'stats', containerId, ...s });
  }

  close(): Promise<void> {
    return this.link.close();
  }

  private handlersOf(containerId: string): MountHandlers {
    const h = this.containers.get(containerId);
    if (!h) throw new DaemonError('E_UNKNOWN_CONTAINER', `this mount peer does not serve container ${containerId}`);
    return h;
  }

  private async resync(): Promise<void> {
    for (const id of this.containers.keys()) await this.reportUsage(id);
  }

  private async handle(m: ToMountMessage): Promise<void> {
    switch (m.type) {
      case 'budget':
        await this.handlersOf(m.containerId).onBudget(m.limitBytes);
        return;
      case 'evict': {
        const usageBytes = await this.handlersOf(m.containerId).evict(m.bytes);
        this.link.send({ type: 'shrink-ready', containerId: m.containerId, requestId: m.requestId, usageBytes });
        return;
      }
      case 'shrink': {
        const usageBytes = await this.handlersOf(m.containerId).shrink(m.targetLimitBytes);
        this.link.send({ type: 'shrink-ready', containerId: m.containerId, requestId: m.requestId, usageBytes });
        return;
      }
      case 'status-reply':
        return;
    }
  }
}
