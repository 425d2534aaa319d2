import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import type { Logger } from 'pino';
import { LinkError, errorCode, errorMessage } from './errors';
import { DEFAULT_HEARTBEAT, startHeartbeat, type HeartbeatOptions } from './heartbeat';
import { asErrorReply, decodeMessage, encodeMessage, HelloSchema, MAX_FRAME_BYTES, type LinkErrorReply, type MessageSet } from './messages';
import { parseEndpoint, type Endpoint, type EndpointInput } from './endpoint';
import { tokensEqual } from './token';

export interface LinkHostOptions<In extends { type: string }, Out extends { type: string }> {
  /** The only tenant this server serves: a hello naming another is refused even with a valid token. */
  tenant: string;
  /**
   * What every hello must carry (compared in constant time). `null` admits anyone who reaches the
   * socket: only for a host whose operator chose so (the controller's `--no-agent-token`).
   */
  token: string | null;
  /** What peers may send. */
  inbound: MessageSet<In>;
  /** What this server sends (checked before it leaves). */
  outbound: MessageSet<Out>;
  heartbeat?: Partial<HeartbeatOptions>;
  /** The hello must arrive within this after the socket opens. */
  helloTimeoutMs?: number;
  /** Largest frame accepted (default MAX_FRAME_BYTES); a larger one closes the connection (1009). */
  maxFrameBytes?: number;
  logger?: Logger;
  onSession?: (session: LinkSession<Out>) => void;
  /** A checked message. A throw (or rejection) is answered with an error reply carrying its code. */
  onMessage: (session: LinkSession<Out>, message: In) => void | Promise<void>;
  /** The peer missed its heartbeat; its socket is terminated next (and `onClose` follows). */
  onHeartbeatTimeout?: (session: LinkSession<Out>) => void;
  onClose?: (session: LinkSession<Out>) => void;
  /** The peer refused something this server sent. */
  onPeerError?: (session: LinkSession<Out>, error: LinkErrorReply) => void;
}

export interface LinkServerOptions<In extends { type: string }, Out extends { type: string }> extends LinkHostOptions<In, Out> {
  token: string;
  listen: EndpointInput;
}

/** One authenticated peer. */
export class LinkSession<Out extends { type: string }> {
  readonly id = randomUUID();
  readonly openedAt = Date.now();
  closed = false;

  constructor(
    readonly role: string,
    readonly peerId: string,
    private readonly ws: WebSocket,
    private readonly outbound: MessageSet<Out>,
  ) {}

  get open(): boolean {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  send(message: Out): void {
    if (!this.open) throw new LinkError('E_NOT_CONNECTED', `session ${this.role}/${this.peerId} is closed`);
    this.ws.send(encodeMessage(this.outbound, message));
  }

  sendError(code: string, message: string, inReplyTo?: string): void {
    if (!this.open) return;
    this.ws.send(JSON.stringify(inReplyTo === undefined ? { type: 'error', code, message } : { type: 'error', code, message, inReplyTo }));
  }

  close(code = 1000, reason = ''): void {
    this.closed = true;
    this.ws.close(code, reason);
  }

  /** Drops the connection without a closing handshake (tests: a peer that vanished). */
  terminate(): void {
    this.closed = true;
    this.ws.terminate();
  }
}

/**
 * The accepting end of a link, generic over its message families, without a listener of its own:
 * an HTTP server that also serves other things hands it the upgrades of its link path
 * (`handleUpgrade`). Authentication is the first frame: a hello with the tenant and its token
 * (compared in constant time, never logged); nothing else is read before it. Every later frame is
 * decoded against `inbound`; a malformed or unknown one gets an error reply and is never handed to
 * `onMessage`.
 */
export class LinkHost<In extends { type: string }, Out extends { type: string }> {
  readonly sessions = new Set<LinkSession<Out>>();
  protected readonly wss: WebSocketServer;
  private readonly heartbeat: HeartbeatOptions;
  private readonly maxFrameBytes: number;

  constructor(protected readonly options: LinkHostOptions<In, Out>) {
    this.heartbeat = { ...DEFAULT_HEARTBEAT, ...options.heartbeat };
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.maxFrameBytes });
    this.wss.on('connection', (ws: WebSocket) => this.accept(ws));
  }

  /** Takes over one HTTP upgrade request (the owner has matched its path). */
  handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit('connection', ws, req));
  }

  /** Sends to every open session of `role` (all when absent). */
  broadcast(message: Out, role?: string): void {
    for (const s of this.sessions) if (s.open && (role === undefined || s.role === role)) s.send(message);
  }

  /** Drops every session (peers reconnect to whoever serves next) and accepts no more. */
  async close(): Promise<void> {
    for (const s of this.sessions) s.terminate();
    this.sessions.clear();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private accept(ws: WebSocket): void {
    const log = this.options.logger;
    const refuse = (code: string, message: string): void => {
      // Never echo or log the presented token.
      log?.warn({ code }, 'link hello refused');
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'error', code, message, inReplyTo: 'hello' }));
      ws.close(4001, code);
    };
    const helloTimer = setTimeout(() => refuse('E_HELLO_TIMEOUT', 'no hello received in time'), this.options.helloTimeoutMs ?? 5_000);
    ws.once('close', () => clearTimeout(helloTimer));
    ws.once('message', (frame: Buffer, isBinary: boolean) => {
      clearTimeout(helloTimer);
      let value: unknown;
      try {
        value = isBinary ? undefined : JSON.parse(frame.toString('utf8'));
      } catch {
        value = undefined;
      }
      const hello = HelloSchema.safeParse(value);
      if (!hello.success) return refuse('E_AUTH', 'the first message must be a valid hello');
      const expected = this.options.token;
      if (expected !== null) {
        if (hello.data.token === undefined) return refuse('E_AUTH', 'this link needs a token');
        if (!tokensEqual(hello.data.token, expected)) return refuse('E_AUTH', 'bad token');
      }
      if (hello.data.tenant !== this.options.tenant) {
        return refuse('E_WRONG_TENANT', `this link serves tenant ${this.options.tenant}, not ${hello.data.tenant}`);
      }
      this.establish(ws, hello.data.role, hello.data.peerId);
    });
    ws.on('error', (err) => log?.debug({ err: errorMessage(err) }, 'link socket error'));
  }

  private establish(ws: WebSocket, role: string, peerId: string): void {
    const session = new LinkSession<Out>(role, peerId, ws, this.options.outbound);
    this.sessions.add(session);
    const stopHeartbeat = startHeartbeat(ws, this.heartbeat, () => {
      this.options.logger?.warn({ role, peerId }, 'link peer missed its heartbeat; dropping it');
      this.options.onHeartbeatTimeout?.(session);
    });
    ws.on('close', () => {
      stopHeartbeat();
      session.closed = true;
      this.sessions.delete(session);
      this.options.onClose?.(session);
    });
    ws.on('message', (frame: Buffer, isBinary: boolean) => {
      if (isBinary) return session.sendError('E_BAD_MESSAGE', 'binary frames are not accepted');
      const peerError = asErrorReply(frame);
      if (peerError) {
        // A peer's error reply about something we sent: report it, never answer it (no error ping-pong).
        this.options.logger?.warn({ peerId, code: peerError.code, inReplyTo: peerError.inReplyTo }, peerError.message);
        this.options.onPeerError?.(session, peerError);
        return;
      }
      const decoded = decodeMessage(this.options.inbound, frame, this.maxFrameBytes);
      if (!decoded.ok) return session.sendError(decoded.code, decoded.message, decoded.inReplyTo);
      void (async () => {
        try {
          await this.options.onMessage(session, decoded.message);
        } catch (err) {
          session.sendError(errorCode(err), errorMessage(err), decoded.message.type);
        }
      })();
    });
    ws.send(JSON.stringify({ type: 'welcome', sessionId: session.id, tenant: this.options.tenant, heartbeat: { intervalMs: this.heartbeat.intervalMs, timeoutMs: this.heartbeat.timeoutMs } }));
    this.options.onSession?.(session);
  }
}

/** A link host on a listener of its own: a Unix socket (0600) or loopback TCP. */
export class LinkServer<In extends { type: string }, Out extends { type: string }> extends LinkHost<In, Out> {
  readonly endpoint: Endpoint;
  private http: Server | undefined;

  constructor(options: LinkServerOptions<In, Out>) {
    super(options);
    this.endpoint = parseEndpoint(options.listen);
  }

  /** Listens; resolves with the endpoint actually bound (a TCP port 0 becomes the real port). */
  async start(): Promise<Endpoint> {
    const http = createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('this endpoint speaks WebSocket only\n');
    });
    // Every path: clients ask for /link, and nothing else is served here.
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.handleUpgrade(req, socket, head));
    // listen() reports its own errors; this keeps later ones from going uncaught.
    http.on('error', (err) => this.options.logger?.debug({ err: errorMessage(err) }, 'link server error'));
    this.http = http;
    if ('socketPath' in this.endpoint) {
      await mkdir(path.dirname(this.endpoint.socketPath), { recursive: true, mode: 0o700 });
      await removeStaleSocket(this.endpoint.socketPath);
      await listen(http, this.endpoint.socketPath);
      // The token is the guard; the mode keeps other local users from even trying.
      await chmod(this.endpoint.socketPath, 0o600);
      return this.endpoint;
    }
    await listen(http, this.endpoint.port, this.endpoint.host);
    const address = http.address();
    const port = typeof address === 'object' && address ? address.port : this.endpoint.port;
    (this as { endpoint: Endpoint }).endpoint = { host: this.endpoint.host, port };
    return this.endpoint;
  }

  override async close(): Promise<void> {
    await super.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections();
    if ('socketPath' in this.endpoint) await unlink(this.endpoint.socketPath).catch(() => undefined);
  }
}

function listen(server: Server, portOrPath: number | string, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (typeof portOrPath === 'string') server.listen(portOrPath, done);
    else server.listen(portOrPath, host, done);
  });
}

/** A socket file left by a dead server is removed; one a live server answers on is an error. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new LinkError('E_BAD_CONFIG', `another server is listening on ${socketPath}`);
  await unlink(socketPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw new LinkError('E_BAD_CONFIG', `cannot remove stale socket ${socketPath}: ${err.message}`, err);
  });
}
