import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import type { Logger } from 'pino';
import { LinkError, errorCode, errorMessage } from './errors';
import { DEFAULT_HEARTBEAT, startHeartbeat, type HeartbeatOptions } from './heartbeat';
import { asErrorReply, decodeMessage, encodeMessage, MAX_FRAME_BYTES, WelcomeSchema, type LinkErrorReply, type MessageSet } from './messages';
import { endpointUrl, parseClientEndpoint, type ClientEndpoint, type ClientEndpointInput } from './endpoint';

export interface ReconnectOptions {
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
  /** Each delay is scattered by ± this fraction, so many peers do not return in lockstep. */
  jitter: number;
}

export const DEFAULT_RECONNECT: ReconnectOptions = { initialDelayMs: 100, maxDelayMs: 5_000, factor: 2, jitter: 0.2 };

export interface LinkClientOptions<In extends { type: string }, Out extends { type: string }> {
  endpoint: ClientEndpointInput;
  tenant: string;
  /** Absent only towards a server that admits anyone (`token: null` on its side). */
  token?: string;
  /** What this peer is (`mount`, `control`, `manager`…), and its id; the server sees both. */
  role: string;
  peerId?: string;
  /** What the server may send us. */
  inbound: MessageSet<In>;
  /** What we send (checked before it leaves). */
  outbound: MessageSet<Out>;
  /** `false`: one connection only (CLI tools). */
  reconnect?: Partial<ReconnectOptions> | false;
  /**
   * A refusal (bad token, wrong tenant) ends the reconnection unless this is set: a peer whose
   * credential an operator may fix while it waits (a node agent) keeps trying, with the backoff.
   */
  retryRefused?: boolean;
  /** `'server'`: the heartbeat the server announces in its welcome, so both ends give up alike. */
  heartbeat?: Partial<HeartbeatOptions> | 'server';
  /** Largest frame accepted (default MAX_FRAME_BYTES). */
  maxFrameBytes?: number;
  /** The welcome must arrive within this. */
  connectTimeoutMs?: number;
  logger?: Logger;
  /** A checked message. A throw is answered with an error reply carrying its code. */
  onMessage: (message: In) => void | Promise<void>;
  /**
   * After every connection (the first and each reconnection): send the full state. Either side may
   * have restarted while we were apart, so nothing sent before can be assumed known.
   */
  onResync?: () => void | Promise<void>;
  onPeerError?: (error: LinkErrorReply) => void;
  /** Each refusal of our hello (E_AUTH, E_WRONG_TENANT), on the first connection and on every retry. */
  onRefused?: (error: LinkError) => void;
  onDisconnect?: () => void;
}

/**
 * The connecting end of a link. Reconnects with capped exponential backoff after any loss except a
 * refusal (bad token, wrong tenant), which no retry can fix unless someone fixes the credential
 * (`retryRefused`).
 */
export class LinkClient<In extends { type: string }, Out extends { type: string }> {
  readonly peerId: string;
  readonly endpoint: ClientEndpoint;
  /** Connections established so far (1 after the first; tests read it to see a reconnection). */
  connections = 0;
  private ws: WebSocket | undefined;
  private ready = false;
  private stopped = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly reconnect: ReconnectOptions | false;
  private readonly heartbeat: HeartbeatOptions | 'server';
  private readonly maxFrameBytes: number;
  private readonly waiters = new Set<{ match: (m: In) => boolean; resolve: (m: In) => void }>();
  private readonly connectedWaiters = new Set<() => void>();

  constructor(private readonly options: LinkClientOptions<In, Out>) {
    this.endpoint = parseClientEndpoint(options.endpoint);
    this.peerId = options.peerId ?? randomUUID();
    this.reconnect = options.reconnect === false ? false : { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.heartbeat = options.heartbeat === 'server' ? 'server' : { ...DEFAULT_HEARTBEAT, ...options.heartbeat };
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  }

  get connected(): boolean {
    return this.ready && this.ws?.readyState === WebSocket.OPEN;
  }

  /**
   * Connects; resolves once welcomed and resynced. Rejects on refusal (E_AUTH, E_WRONG_TENANT), and
   * without reconnection on any first failure; with reconnection it keeps trying in the background.
   */
  start(): Promise<void> {
    this.stopped = false;
    return this.connectOnce();
  }

  /** Resolves at the next successful (re)connection, or rejects after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.connectedWaiters.delete(done);
        reject(new LinkError('E_TIMEOUT', `not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.connectedWaiters.add(done);
    });
  }

  send(message: Out): void {
    if (!this.connected || !this.ws) throw new LinkError('E_NOT_CONNECTED', `link to ${endpointUrl(this.endpoint)} is not connected`);
    this.ws.send(encodeMessage(this.options.outbound, message));
  }

  /** Sends the raw text as is (tests: malformed frames must be answered, not applied). */
  sendRaw(frame: string): void {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new LinkError('E_NOT_CONNECTED', 'not connected');
    this.ws.send(frame);
  }

  /** The next inbound message matching `match` (e.g. a reply with a request id). */
  waitFor<T extends In>(match: (m: In) => m is T, timeoutMs: number): Promise<T>;
  waitFor(match: (m: In) => boolean, timeoutMs: number): Promise<In>;
  waitFor(match: (m: In) => boolean, timeoutMs: number): Promise<In> {
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (m: In) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new LinkError('E_TIMEOUT', `no matching reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  async close(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 1000);
      ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      ws.close(1000, 'client closing');
    });
  }

  private connectOnce(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(endpointUrl(this.endpoint), { maxPayload: this.maxFrameBytes, handshakeTimeout: this.options.connectTimeoutMs ?? 5_000 });
      this.ws = ws;
      let settled = false;
      let refused: LinkError | undefined;
      let stopHeartbeat: (() => void) | undefined;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(welcomeTimer);
        if (err) reject(err);
        else resolve();
      };
      const welcomeTimer = setTimeout(() => {
        settle(new LinkError('E_TIMEOUT', `no welcome from ${endpointUrl(this.endpoint)} within ${this.options.connectTimeoutMs ?? 5_000} ms`));
        ws.terminate();
      }, this.options.connectTimeoutMs ?? 5_000);
      ws.on('open', () => {
        const { tenant, token, role } = this.options;
        ws.send(JSON.stringify(token === undefined ? { type: 'hello', tenant, role, peerId: this.peerId } : { type: 'hello', tenant, token, role, peerId: this.peerId }));
      });
      ws.on('message', (frame: Buffer) => {
        if (!this.ready) {
          const reply = asErrorReply(frame);
          if (reply) {
            refused = new LinkError(reply.code === 'E_WRONG_TENANT' ? 'E_WRONG_TENANT' : 'E_AUTH', reply.message);
            this.options.onRefused?.(refused);
            settle(refused);
            return;
          }
          let welcome: unknown;
          try {
            welcome = JSON.parse(frame.toString('utf8'));
          } catch {
            welcome = undefined;
          }
          const welcomed = WelcomeSchema.safeParse(welcome);
          if (!welcomed.success) {
            settle(new LinkError('E_AUTH', 'the server did not welcome us'));
            ws.terminate();
            return;
          }
          const heartbeat = this.heartbeat === 'server' ? (welcomed.data.heartbeat ?? DEFAULT_HEARTBEAT) : this.heartbeat;
          this.ready = true;
          this.attempt = 0;
          this.connections += 1;
          stopHeartbeat = startHeartbeat(ws, heartbeat, () => this.options.logger?.warn('link server missed its heartbeat'));
          void (async () => {
            try {
              await this.options.onResync?.();
            } catch (err) {
              this.options.logger?.error({ err: errorMessage(err) }, 'link resync failed');
            }
            for (const w of this.connectedWaiters) w();
            this.connectedWaiters.clear();
            settle();
          })();
          return;
        }
        this.receive(frame);
      });
      ws.on('error', (err) => {
        this.options.logger?.debug({ err: errorMessage(err) }, 'link client socket error');
        settle(new LinkError('E_NOT_CONNECTED', `connecting to ${endpointUrl(this.endpoint)}: ${errorMessage(err)}`, err));
      });
      ws.on('close', () => {
        stopHeartbeat?.();
        const wasReady = this.ready;
        this.ready = false;
        settle(new LinkError('E_CLOSED', 'connection closed before the welcome'));
        if (wasReady) this.options.onDisconnect?.();
        if (this.stopped || (refused && !this.options.retryRefused) || this.reconnect === false) return;
        this.scheduleReconnect();
      });
    });
  }

  private scheduleReconnect(): void {
    if (this.reconnect === false || this.stopped) return;
    const r = this.reconnect;
    const base = Math.min(r.maxDelayMs, r.initialDelayMs * r.factor ** this.attempt);
    const delay = Math.max(0, base * (1 + r.jitter * (2 * Math.random() - 1)));
    this.attempt += 1;
    this.retryTimer = setTimeout(() => {
      if (this.stopped) return;
      this.connectOnce().catch((err: unknown) => {
        // Each failure closes the socket, whose close handler schedules the next try.
        this.options.logger?.debug({ err: errorMessage(err), attempt: this.attempt }, 'link reconnect failed');
      });
    }, delay);
    this.retryTimer.unref?.();
  }

  private receive(frame: Buffer): void {
    const peerError = asErrorReply(frame);
    if (peerError) {
      this.options.logger?.warn({ code: peerError.code, inReplyTo: peerError.inReplyTo }, peerError.message);
      this.options.onPeerError?.(peerError);
      return;
    }
    const decoded = decodeMessage(this.options.inbound, frame, this.maxFrameBytes);
    if (!decoded.ok) {
      this.ws?.send(JSON.stringify({ type: 'error', code: decoded.code, message: decoded.message, inReplyTo: decoded.inReplyTo }));
      return;
    }
    const message = decoded.message;
    for (const w of this.waiters) {
      if (w.match(message)) {
        this.waiters.delete(w);
        w.resolve(message);
      }
    }
    void (async () => {
      try {
        await this.options.onMessage(message);
      } catch (err) {
        if (this.ws?.readyState === WebSocket.OPEN) {
          this.ws.send(JSON.stringify({ type: 'error', code: errorCode(err), message: errorMessage(err), inReplyTo: message.type }));
        }
      }
    })();
  }
}
