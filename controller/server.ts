import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type pino from 'pino';
import { z } from 'zod';
import {
  AGENT_LINK_TENANT,
  AGENT_MAX_FRAME_BYTES,
  AGENT_PATH,
  ensureTenantToken,
  LinkHost,
  tokensEqual,
  ToAgent,
  ToController,
  type FunctionRef,
  type InvocationOutcome,
  type LinkSession,
  type ProfileFigures,
  type RunningTask,
  type ToAgentMessage,
  type ToControllerMessage,
} from '../link/index';
import { createLogger } from '../log/index';
import { MiB, type Scoring } from '../policy';
import {
  authenticate,
  bearerToken,
  describePrincipal,
  isLoopbackHost,
  TENANT_NAME,
  TenantCredentials,
  TenantLimitsSchema,
  type Principal,
} from './auth';
import { ControllerError, errorMessage, issuesFrom, type RequestIssue } from './errors';
import { ExtenderArgsSchema, extenderFilter, extenderPrioritize } from './extender';
import { ControllerMetrics } from './metrics';
import { ClusterState, type NodeView } from './state';
import { demandBytes, FunctionStore, type FunctionRecord } from './store';

export interface ControllerOptions {
  /** Address to listen on; 127.0.0.1 by default. */
  host?: string;
  /** 0 picks a free port (tests). */
  port?: number;
  /** Where `functions.json` lives. */
  stateDir: string;
  scoring?: Scoring;
  /** From this many nodes on, placement uses the policy's indexed cluster. */
  indexedFromNodes?: number;
  /** Agents send a heartbeat this often (told to them at registration). */
  heartbeatMs?: number;
  /**
   * A registered agent silent this long is lost; a dropped connection gets the same grace to come back
   * (same process, new socket) before its tasks are failed.
   */
  nodeTimeoutMs?: number;
  /** Invocation time limit when the request gives none. */
  defaultInvokeTimeoutMs?: number;
  /** Time limit of a profiling run (all inputs). */
  profileTimeoutMs?: number;
  logger?: pino.Logger;
  /**
   * Agents must present this token (in the link's hello) to join; a link without it, or with
   * another, is refused before any message. Undefined: any agent that reaches the port may join.
   */
  agentToken?: string;
  /** The operator's bearer token (cluster-wide routes); default: `<stateDir>/tokens/operator.token`, made once (0600). */
  operatorToken?: string;
  /**
   * The extender routes' secret path segment (kube-scheduler `urlPrefix: https://…/scheduler/<secret>`);
   * default: `<stateDir>/tokens/extender.token`, made once (0600).
   */
  extenderSecret?: string;
  /** Serve HTTPS (and WSS for agents). `clientCaFile`: a scheduler client certificate it signs may call the extender routes. */
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  /** Accept a non-loopback `host` without `tls`: a TLS-terminating proxy is the only way to the port. */
  behindTlsProxy?: boolean;
}

/** Token files beside `agents.token` in `<stateDir>/tokens/`. */
export const OPERATOR_TOKEN_NAME = 'operator';
export const EXTENDER_TOKEN_NAME = 'extender';

/** The per-request record an audit line is written from once the answer is sent. */
interface AuditEntry {
  who: string;
  action: string;
  target?: string;
  code?: string;
}

interface Secrets {
  operatorToken: string;
  extenderSecret: string;
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
}

export type TaskStatus = 'running' | 'succeeded' | 'failed';

/** What `POST /functions/:name/invoke` and `GET /tasks/:id` answer. */
export interface TaskRecord {
  taskId: string;
  tenant: string;
  function: string;
  node: string;
  status: TaskStatus;
  args: string[];
  limitBytes: number;
  memBytes: number;
  placedAt: string;
  /** choose + place in the controller, microseconds. */
  scheduleUs: number;
  /** Placement to result, milliseconds (set when finished). */
  totalMs?: number;
  outcome?: InvocationOutcome;
  error?: { code: string; message: string };
}

const NAME = z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." and "-", starting with a letter or digit');
const BYTES = z.number().int().nonnegative();

const DeployBodySchema = z
  .object({
    name: NAME,
    /** Older clients name the tenant; it must be the credential's own (the credential decides). */
    tenant: NAME.optional(),
    image: z.string().min(1),
    command: z.array(z.string().min(1)).min(1),
    /** T_lim in MiB (Docker's floor is 6). */
    memoryMiB: z.number().int().min(6).max(1024 * 1024),
    /** Representative inputs: one profiling invocation each. */
    inputs: z.array(z.array(z.string())).min(1).optional(),
    /** A profile known offline (the original's trace supplied these); skips the profiling run. */
    profile: z.object({ peakMemoryBytes: BYTES, largestFileBytes: BYTES }).strict().optional(),
    /** Redeploy over an existing function of the same tenant and name. */
    replace: z.boolean().default(false),
  })
  .strict();

const InvokeBodySchema = z
  .object({
    tenant: NAME.optional(),
    args: z.array(z.string()).default([]),
    timeoutMs: z.number().int().positive().max(3_600_000).optional(),
    /** false: answer 202 as soon as the task is placed; poll `GET /tasks/:id`. */
    wait: z.boolean().default(true),
  })
  .strict();

const TenantQuerySchema = z.object({ tenant: NAME.optional() });
const TokenBodySchema = z.object({ tenant: TENANT_NAME, label: z.string().max(200).optional() }).strict();
const MAX_BODY_BYTES = 4 * MiB;
const KEPT_FINISHED_TASKS = 10_000;

interface AgentConnection {
  session: LinkSession<ToAgentMessage>;
  node?: string;
  instanceId?: string;
  /** An authenticated link that does not register within the node timeout is dropped. */
  registerTimer?: NodeJS.Timeout;
}

interface PendingTask {
  record: TaskRecord;
  startedAt: number;
  settle: () => void;
  timer?: NodeJS.Timeout;
}

interface PendingProfile {
  node: string;
  resolve: (p: ProfileFigures) => void;
  reject: (err: ControllerError) => void;
  timer: NodeJS.Timeout;
}

/**
 * The cluster controller: agents connect over WebSocket at `/agents`, clients use the HTTP API on the
 * same port. One instance keeps every tenant's tasks in one `ClusterState`.
 */
export class Controller {
  readonly state: ClusterState;
  readonly metrics: ControllerMetrics;
  readonly functions: FunctionStore;
  readonly credentials: TenantCredentials;
  readonly heartbeatMs: number;
  readonly nodeTimeoutMs: number;
  private readonly options: ControllerOptions;
  private readonly log: pino.Logger;
  private readonly server: Server;
  private readonly secrets: Secrets;
  private readonly agents: LinkHost<ToControllerMessage, ToAgentMessage>;
  private readonly links = new Map<string, AgentConnection>();
  private readonly connections = new Map<LinkSession<ToAgentMessage>, AgentConnection>();
  private readonly lostTimers = new Map<string, NodeJS.Timeout>();
  private readonly pending = new Map<string, PendingTask>();
  private readonly finished = new Map<string, TaskRecord>();
  private readonly profiles = new Map<string, PendingProfile>();
  private closed = false;

  private constructor(options: ControllerOptions, functions: FunctionStore, credentials: TenantCredentials, secrets: Secrets) {
    this.options = options;
    this.functions = functions;
    this.credentials = credentials;
    this.secrets = secrets;
    this.heartbeatMs = options.heartbeatMs ?? 2000;
    this.nodeTimeoutMs = options.nodeTimeoutMs ?? 3 * this.heartbeatMs;
    if (this.nodeTimeoutMs <= this.heartbeatMs) {
      throw new ControllerError('E_BAD_ARGS', `node timeout (${this.nodeTimeoutMs} ms) must exceed the heartbeat interval (${this.heartbeatMs} ms)`);
    }
    this.log = options.logger ?? createLogger('controller');
    this.state = new ClusterState({ scoring: options.scoring ?? 'complementarity', indexedFromNodes: options.indexedFromNodes ?? 256 });
    this.metrics = new ControllerMetrics(this.state);
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    const tls = secrets.tls;
    // With a client CA, a certificate is asked for but not required: tenants present bearer tokens, and
    // only the extender routes look at `authorized`.
    this.server = tls
      ? createHttpsServer({ cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca, requestCert: true, rejectUnauthorized: false } : {}) }, handler)
      : createServer(handler);
    this.agents = new LinkHost<ToControllerMessage, ToAgentMessage>({
      tenant: AGENT_LINK_TENANT,
      token: options.agentToken ?? null,
      inbound: ToController,
      outbound: ToAgent,
      // A ping each heartbeat; a pong missing for the rest of the node timeout loses the node, so an
      // agent is given up after at most nodeTimeoutMs of silence.
      heartbeat: { intervalMs: this.heartbeatMs, timeoutMs: this.nodeTimeoutMs - this.heartbeatMs },
      helloTimeoutMs: this.nodeTimeoutMs,
      maxFrameBytes: AGENT_MAX_FRAME_BYTES,
      logger: this.log,
      onSession: (session) => this.onAgentSession(session),
      onMessage: (session, message) => {
        const conn = this.connections.get(session);
        if (conn) this.onAgentMessage(conn, message);
      },
      onHeartbeatTimeout: (session) => this.onAgentSilent(session),
      onClose: (session) => {
        const conn = this.connections.get(session);
        if (conn) this.onAgentClose(conn);
      },
    });
    this.server.on('upgrade', (req, socket: Socket, head) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path !== AGENT_PATH || this.closed) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      this.agents.handleUpgrade(req, socket, head);
    });
  }

  static async start(options: ControllerOptions): Promise<Controller> {
    const host = options.host ?? '127.0.0.1';
    if (!isLoopbackHost(host) && !options.tls && !options.behindTlsProxy) {
      throw new ControllerError(
        'E_BAD_ARGS',
        `refusing to listen on ${host} without TLS: every request carries a bearer token. Give a certificate and key (--tls-cert, --tls-key), ` +
          'or --behind-tls-proxy when a TLS-terminating proxy is the only way to this port',
      );
    }
    const functions = await FunctionStore.open(options.stateDir);
    const credentials = await TenantCredentials.open(options.stateDir);
    const readPem = async (file: string, what: string) => {
      try {
        return await readFile(file);
      } catch (err) {
        throw new ControllerError('E_BAD_ARGS', `cannot read the TLS ${what} ${file}: ${errorMessage(err)}`);
      }
    };
    const secrets: Secrets = {
      operatorToken: options.operatorToken ?? (await ensureTenantToken(options.stateDir, OPERATOR_TOKEN_NAME)),
      extenderSecret: options.extenderSecret ?? (await ensureTenantToken(options.stateDir, EXTENDER_TOKEN_NAME)),
      ...(options.tls
        ? {
            tls: {
              cert: await readPem(options.tls.certFile, 'certificate'),
              key: await readPem(options.tls.keyFile, 'key'),
              ...(options.tls.clientCaFile ? { ca: await readPem(options.tls.clientCaFile, 'client CA') } : {}),
            },
          }
        : {}),
    };
    const controller = new Controller(options, functions, credentials, secrets);
    await new Promise<void>((resolve, reject) => {
      controller.server.once('error', reject);
      controller.server.listen(options.port ?? 7070, host, () => {
        controller.server.off('error', reject);
        resolve();
      });
    });
    controller.log.info(
      { url: controller.url, scoring: controller.state.scoring, functions: functions.list().length, tokens: credentials.list().length, tls: !!secrets.tls, behindTlsProxy: !!options.behindTlsProxy },
      'controller listening',
    );
    return controller;
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  get url(): string {
    const a = this.address;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `${this.secrets.tls ? 'https' : 'http'}://${host}:${a.port}`;
  }

  /** Stops serving: agent links are dropped (agents keep their tasks and reconnect to the next controller). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.lostTimers.values()) clearTimeout(timer);
    for (const c of this.connections.values()) if (c.registerTimer) clearTimeout(c.registerTimer);
    await this.agents.close();
    for (const p of this.profiles.values()) {
      clearTimeout(p.timer);
      p.reject(new ControllerError('E_CLOSED', 'the controller is shutting down'));
    }
    for (const p of [...this.pending.values()]) this.completeTask(p.record.taskId, undefined, { code: 'E_CLOSED', message: 'the controller is shutting down' });
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ------------------------------------------------------------------------------------------
  // Agent link

  private onAgentSession(session: LinkSession<ToAgentMessage>): void {
    const conn: AgentConnection = { session };
    this.connections.set(session, conn);
    conn.registerTimer = setTimeout(() => {
      if (conn.node !== undefined) return;
      this.log.warn({ peer: session.peerId, timeoutMs: this.nodeTimeoutMs }, 'agent link did not register within the node timeout; dropped');
      session.terminate();
    }, this.nodeTimeoutMs);
    conn.registerTimer.unref();
  }

  /** The link's heartbeat gave the agent up: lost at once, without the grace of a closed link. */
  private onAgentSilent(session: LinkSession<ToAgentMessage>): void {
    const conn = this.connections.get(session);
    if (!conn) return;
    this.log.warn({ node: conn.node, timeoutMs: this.nodeTimeoutMs }, 'agent silent past the node timeout: lost');
    if (conn.node !== undefined && this.links.get(conn.node) === conn) {
      this.links.delete(conn.node);
      this.loseNode(conn.node, 'heartbeat timeout');
    }
  }

  /** A throw is answered on the link with an error reply (E_PROTOCOL) and applies nothing. */
  private onAgentMessage(conn: AgentConnection, message: ToControllerMessage): void {
    if (message.type === 'register') {
      this.onRegister(conn, message);
      return;
    }
    if (conn.node === undefined || this.links.get(conn.node) !== conn) {
      throw new ControllerError('E_PROTOCOL', `${message.type} before register`);
    }
    const node = conn.node;
    switch (message.type) {
      case 'heartbeat': {
        const adopted = this.state.adopt(node, message.running);
        if (adopted.length > 0) this.log.info({ node, adopted: adopted.map((t) => t.taskId) }, 'adopted tasks from heartbeat');
        for (const task of adopted) this.trackAdopted(node, task);
        return;
      }
      case 'result':
        if (this.state.nodeOf(message.taskId) !== node) {
          this.log.debug({ node, taskId: message.taskId }, 'result for a task not on this node ignored');
          return;
        }
        this.completeTask(message.taskId, message.outcome, message.error);
        return;
      case 'profile-result': {
        const p = this.profiles.get(message.requestId);
        if (!p || p.node !== node) return;
        this.profiles.delete(message.requestId);
        clearTimeout(p.timer);
        if (message.profile) p.resolve(message.profile);
        else p.reject(new ControllerError('E_EXECUTION', `profiling on ${node} failed: ${message.error?.code ?? '?'}: ${message.error?.message ?? 'no profile'}`));
        return;
      }
    }
  }

  private onRegister(conn: AgentConnection, message: Extract<ToControllerMessage, { type: 'register' }>): void {
    if (conn.node !== undefined) throw new ControllerError('E_PROTOCOL', 'register sent twice on one connection');
    const { node, instanceId } = message;
    const current = this.links.get(node);
    if (current && current !== conn) {
      if (current.instanceId === instanceId) {
        // The same process reconnected before we saw its old socket close.
        current.node = undefined;
        current.session.terminate();
      } else {
        this.log.warn({ node, old: current.instanceId, new: instanceId }, 'a new agent process took over the node name; the old link is dropped');
        current.node = undefined;
        current.session.terminate();
      }
    }
    const lost = this.lostTimers.get(node);
    if (lost) {
      clearTimeout(lost);
      this.lostTimers.delete(node);
    }
    if (conn.registerTimer) clearTimeout(conn.registerTimer);
    conn.node = node;
    conn.instanceId = instanceId;
    this.links.set(node, conn);
    const outcome = this.state.register(node, instanceId, message.limitBytes, message.running);
    this.metrics.nodeEvents.inc({ event: outcome.restarted ? 'restarted' : 'registered' });
    for (const task of outcome.failed) {
      this.failTask(task.taskId, 'E_NODE_LOST', `node ${node} ${outcome.restarted ? 'restarted' : 're-registered'} without task ${task.taskId}`);
    }
    for (const task of outcome.adopted) this.trackAdopted(node, task);
    this.log.info(
      { node, instanceId, limitMiB: message.limitBytes / MiB, running: message.running.length, adopted: outcome.adopted.length, failed: outcome.failed.length, restarted: outcome.restarted },
      'agent registered',
    );
    this.send(conn, { type: 'registered', heartbeatMs: this.heartbeatMs });
  }

  private onAgentClose(conn: AgentConnection): void {
    this.connections.delete(conn.session);
    if (conn.registerTimer) clearTimeout(conn.registerTimer);
    const node = conn.node;
    if (node === undefined || this.links.get(node) !== conn || this.closed) return;
    this.links.delete(node);
    this.state.markUnreachable(node);
    this.metrics.nodeEvents.inc({ event: 'disconnected' });
    this.log.warn({ node, graceMs: this.nodeTimeoutMs }, 'agent link closed; node takes no placements until it re-registers');
    const timer = setTimeout(() => {
      this.lostTimers.delete(node);
      if (this.state.status(node) === 'unreachable') this.loseNode(node, 'did not come back within the node timeout');
    }, this.nodeTimeoutMs);
    timer.unref();
    this.lostTimers.set(node, timer);
  }

  private loseNode(node: string, why: string): void {
    const failed = this.state.markLost(node);
    this.metrics.nodeEvents.inc({ event: 'lost' });
    this.log.warn({ node, failed: failed.map((t) => t.taskId), why }, 'node lost: its tasks failed, its capacity released');
    for (const task of failed) this.failTask(task.taskId, 'E_NODE_LOST', `node ${node} was lost (${why}) while running task ${task.taskId}`);
    for (const [id, p] of this.profiles) {
      if (p.node !== node) continue;
      this.profiles.delete(id);
      clearTimeout(p.timer);
      p.reject(new ControllerError('E_NODE_LOST', `node ${node} was lost during the profiling run (${why})`));
    }
  }

  private send(conn: AgentConnection, message: ToAgentMessage): boolean {
    if (!conn.session.open) return false;
    conn.session.send(message);
    return true;
  }

  // ------------------------------------------------------------------------------------------
  // Tasks

  /** A task the controller learnt about from an agent (after a controller restart): tracked until its result. */
  private trackAdopted(node: string, task: RunningTask): void {
    if (this.pending.has(task.taskId)) return;
    const record: TaskRecord = {
      taskId: task.taskId,
      tenant: task.tenant,
      function: task.function,
      node,
      status: 'running',
      args: [],
      limitBytes: task.limitBytes,
      memBytes: task.memBytes,
      placedAt: new Date(task.startedAt).toISOString(),
      scheduleUs: 0,
    };
    this.pending.set(task.taskId, { record, startedAt: performance.now() - Math.max(0, Date.now() - task.startedAt), settle: () => undefined });
  }

  private failTask(taskId: string, code: string, message: string): void {
    this.completeTask(taskId, undefined, { code, message });
  }

  /** Ends a task once: capacity released, record finished, waiter woken. */
  private completeTask(taskId: string, outcome: InvocationOutcome | undefined, error: { code: string; message: string } | undefined): void {
    this.state.finish(taskId);
    const p = this.pending.get(taskId);
    if (!p) return;
    this.pending.delete(taskId);
    if (p.timer) clearTimeout(p.timer);
    const record = p.record;
    record.totalMs = Math.round((performance.now() - p.startedAt) * 10) / 10;
    if (outcome) record.outcome = outcome;
    if (error || !outcome) {
      record.status = 'failed';
      record.error = error ?? { code: 'E_EXECUTION', message: 'no outcome reported' };
    } else {
      record.status = 'succeeded';
    }
    const label = error?.code === 'E_NODE_LOST' ? 'node_lost' : record.status;
    this.metrics.invocations.inc({ tenant: record.tenant, function: record.function, outcome: label });
    this.metrics.invocationSeconds.observe({ tenant: record.tenant, function: record.function }, record.totalMs / 1000);
    this.finished.set(taskId, record);
    if (this.finished.size > KEPT_FINISHED_TASKS) this.finished.delete(this.finished.keys().next().value!);
    p.settle();
  }

  /** Places one invocation and sends it to its node; resolves with the record once it is placed. */
  placeInvocation(fn: FunctionRecord, args: string[], timeoutMs: number): { record: TaskRecord; done: Promise<TaskRecord> } {
    if (this.closed) throw new ControllerError('E_CLOSED', 'the controller is shutting down');
    const taskId = randomUUID();
    const spec = { id: taskId, limitBytes: fn.limitBytes, memBytes: demandBytes(fn) };
    const t0 = process.hrtime.bigint();
    const node = this.state.choose(spec);
    if (node === null) {
      this.metrics.invocations.inc({ tenant: fn.tenant, function: fn.name, outcome: 'no_capacity' });
      if (this.state.readyNodes().length === 0) throw new ControllerError('E_NO_NODES', 'no node agent is registered');
      throw new ControllerError('E_NO_CAPACITY', `no node has ${fn.limitBytes} B of unallocated memory for ${fn.tenant}/${fn.name}`);
    }
    const task: RunningTask = { taskId, tenant: fn.tenant, function: fn.name, limitBytes: spec.limitBytes, memBytes: spec.memBytes, startedAt: Date.now() };
    this.state.place(node, task);
    const scheduleNs = Number(process.hrtime.bigint() - t0);
    this.metrics.scheduleSeconds.observe(scheduleNs / 1e9);
    const record: TaskRecord = {
      taskId,
      tenant: fn.tenant,
      function: fn.name,
      node,
      status: 'running',
      args,
      limitBytes: spec.limitBytes,
      memBytes: spec.memBytes,
      placedAt: new Date(task.startedAt).toISOString(),
      scheduleUs: Math.round(scheduleNs / 100) / 10,
    };
    let settle!: () => void;
    const done = new Promise<TaskRecord>((resolve) => (settle = () => resolve(record)));
    const pending: PendingTask = { record, startedAt: performance.now(), settle };
    this.pending.set(taskId, pending);
    // The agent enforces the limit; this one only catches an agent that never answers.
    pending.timer = setTimeout(() => this.completeTask(taskId, undefined, { code: 'E_EXECUTION', message: `no result from ${node} within ${timeoutMs} ms (+ grace)` }), timeoutMs + this.nodeTimeoutMs + 60_000);
    pending.timer.unref();
    const conn = this.links.get(node);
    const ref: FunctionRef = {
      tenant: fn.tenant,
      function: fn.name,
      image: fn.image,
      command: fn.command,
      limitBytes: fn.limitBytes,
      ...(fn.profile ? { largestFileBytes: fn.profile.largestFileBytes, peakMemoryBytes: fn.profile.peakMemoryBytes } : {}),
    };
    if (!conn || !this.send(conn, { type: 'execute', task, fn: ref, args, timeoutMs })) {
      this.completeTask(taskId, undefined, { code: 'E_NODE_LOST', message: `node ${node} link is gone` });
    }
    return { record, done };
  }

  task(taskId: string): TaskRecord | undefined {
    return this.pending.get(taskId)?.record ?? this.finished.get(taskId);
  }

  /** Runs the profiling run on a node chosen like an invocation whose demand equals its limit. */
  private async profileOnNode(fn: FunctionRef, inputs: string[][]): Promise<{ node: string; profile: ProfileFigures }> {
    const taskId = `profile-${randomUUID()}`;
    const node = this.state.choose({ id: taskId, limitBytes: fn.limitBytes, memBytes: fn.limitBytes });
    if (node === null) {
      if (this.state.readyNodes().length === 0) throw new ControllerError('E_NO_NODES', 'no node agent is registered to run the profiling run');
      throw new ControllerError('E_NO_CAPACITY', `no node has ${fn.limitBytes} B of unallocated memory for the profiling run`);
    }
    const conn = this.links.get(node)!;
    // The profiling containers use the node's memory like an invocation does.
    this.state.place(node, { taskId, tenant: fn.tenant, function: fn.function, limitBytes: fn.limitBytes, memBytes: fn.limitBytes, startedAt: Date.now() });
    const timeoutMs = this.options.profileTimeoutMs ?? 300_000;
    try {
      const profile = await new Promise<ProfileFigures>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.profiles.delete(taskId);
          reject(new ControllerError('E_EXECUTION', `profiling run on ${node} gave no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        this.profiles.set(taskId, { node, resolve, reject, timer });
        if (!this.send(conn, { type: 'profile', requestId: taskId, fn, inputs, timeoutMs })) {
          clearTimeout(timer);
          this.profiles.delete(taskId);
          reject(new ControllerError('E_NODE_LOST', `node ${node} link is gone`));
        }
      });
      return { node, profile };
    } finally {
      this.state.finish(taskId);
    }
  }

  /** Deploys a function of `tenant` (the credential's): profiling run (or declared profile), then a durable record. */
  async deploy(tenant: string, body: unknown): Promise<FunctionRecord> {
    const parsed = DeployBodySchema.safeParse(body);
    const issues: RequestIssue[] = parsed.success ? [] : issuesFrom('body', parsed.error.issues);
    const raw = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    if (raw.inputs === undefined && raw.profile === undefined) {
      issues.push({ path: 'body.inputs', reason: 'give representative inputs for a profiling run, or a declared profile' });
    }
    if (!parsed.success || issues.length > 0) throw badRequest(issues);
    const b = { ...parsed.data, tenant: ownTenant(tenant, parsed.data.tenant) };
    if (this.functions.get(b.tenant, b.name) && !b.replace) {
      throw new ControllerError('E_EXISTS', `function ${b.tenant}/${b.name} is already deployed (set "replace": true to redeploy)`);
    }
    this.checkDeployLimits(b.tenant, b.name, b.memoryMiB);
    const limitBytes = b.memoryMiB * MiB;
    let profile: FunctionRecord['profile'];
    if (b.profile) {
      profile = { ...b.profile, source: 'declared', inputs: 0, at: new Date().toISOString() };
    } else {
      const ref: FunctionRef = { tenant: b.tenant, function: b.name, image: b.image, command: b.command, limitBytes };
      try {
        const run = await this.profileOnNode(ref, b.inputs!);
        profile = { ...run.profile, source: 'profiled', node: run.node, inputs: b.inputs!.length, at: new Date().toISOString() };
        this.metrics.profilingRuns.inc({ outcome: 'succeeded' });
      } catch (err) {
        this.metrics.profilingRuns.inc({ outcome: 'failed' });
        throw err;
      }
    }
    const record: FunctionRecord = { tenant: b.tenant, name: b.name, image: b.image, command: b.command, limitBytes, profile, deployedAt: new Date().toISOString() };
    // Again: another deploy of this tenant may have finished during the profiling run.
    this.checkDeployLimits(b.tenant, b.name, b.memoryMiB);
    await this.functions.put(record);
    this.log.info({ fn: `${b.tenant}/${b.name}`, limitMiB: b.memoryMiB, profile }, 'function deployed');
    return record;
  }

  nodes(): { scoring: Scoring; nodes: NodeView[] } {
    return { scoring: this.state.scoring, nodes: this.state.nodes() };
  }

  /** Removes a function; its running invocations finish (they carry their own copy of it). */
  async undeploy(tenant: string, name: string): Promise<FunctionRecord> {
    const fn = this.functions.get(tenant, name);
    if (!fn) throw new ControllerError('E_NOT_FOUND', `no function ${tenant}/${name}`);
    await this.functions.delete(tenant, name);
    this.log.info({ fn: `${tenant}/${name}` }, 'function deleted');
    return fn;
  }

  /** What the tenant holds now, against its limits. */
  usage(tenant: string): { functions: number; concurrentInvocations: number; memoryMiB: number } {
    const running = [...this.pending.values()].filter((p) => p.record.tenant === tenant);
    return {
      functions: this.functions.list().filter((f) => f.tenant === tenant).length,
      concurrentInvocations: running.length,
      memoryMiB: running.reduce((sum, p) => sum + p.record.limitBytes, 0) / MiB,
    };
  }

  private checkDeployLimits(tenant: string, name: string, memoryMiB: number): void {
    const limits = this.credentials.limits(tenant);
    const others = this.functions.list().filter((f) => f.tenant === tenant && f.name !== name).length;
    if (limits.functions !== undefined && others + 1 > limits.functions) {
      throw new ControllerError('E_LIMIT', `tenant ${tenant} has ${others} function(s) deployed; its limit is ${limits.functions} (delete one first)`);
    }
    if (limits.memoryMiB !== undefined && memoryMiB > limits.memoryMiB) {
      throw new ControllerError('E_LIMIT', `memoryMiB ${memoryMiB} exceeds tenant ${tenant}'s memory limit of ${limits.memoryMiB} MiB`);
    }
  }

  /** Concurrent invocations and their memory (sum of T_lim), checked before placement. */
  private checkInvokeLimits(fn: FunctionRecord): void {
    const limits = this.credentials.limits(fn.tenant);
    const now = this.usage(fn.tenant);
    if (limits.concurrentInvocations !== undefined && now.concurrentInvocations + 1 > limits.concurrentInvocations) {
      throw new ControllerError('E_LIMIT', `tenant ${fn.tenant} has ${now.concurrentInvocations} invocation(s) running; its limit of concurrent invocations is ${limits.concurrentInvocations}`);
    }
    const needMiB = fn.limitBytes / MiB;
    if (limits.memoryMiB !== undefined && now.memoryMiB + needMiB > limits.memoryMiB) {
      throw new ControllerError(
        'E_LIMIT',
        `tenant ${fn.tenant}'s running invocations hold ${now.memoryMiB} MiB and this one needs ${needMiB} MiB more; its memory limit is ${limits.memoryMiB} MiB`,
      );
    }
  }

  // ------------------------------------------------------------------------------------------
  // HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    // The action is a route pattern, never the raw path: a path may hold a secret (the extender's) or a
    // token pasted in the wrong place, and audit lines must hold neither.
    const audit: AuditEntry = { who: 'anonymous', action: '' };
    try {
      const url = new URL(req.url ?? '/', 'http://controller');
      const path = url.pathname.replace(/\/+$/, '') || '/';
      audit.action = `${method} ${ROUTE_PATTERNS.find(([re]) => re.test(path))?.[1] ?? '(no route)'}`;
      // Open, and says nothing beyond being up.
      if (method === 'GET' && path === '/healthz') return reply(res, 200, { ok: true });
      if (path === '/scheduler' || path.startsWith('/scheduler/')) return await this.handleExtender(req, res, path, method);
      if (method !== 'GET' && method !== 'HEAD') res.once('close', () => this.writeAudit(audit, res));
      const principal = authenticate(bearerToken(req.headers.authorization), this.secrets.operatorToken, this.credentials);
      audit.who = describePrincipal(principal);
      // Before any route is matched: without a credential nothing, not even which routes exist, is told.
      if (!principal) {
        throw new ControllerError('E_UNAUTHORIZED', 'a credential is needed: Authorization: Bearer <token> (a tenant token from `ephemera controller token create`, or the operator token)');
      }
      await this.route(principal, req, res, url, path, method, audit);
    } catch (err) {
      if (err instanceof ControllerError) {
        audit.code = err.code;
        return reply(res, err.httpStatus, err.toJSON(), err.code === 'E_UNAUTHORIZED' ? { 'www-authenticate': 'Bearer' } : {});
      }
      audit.code = 'E_INTERNAL';
      this.log.error({ err: errorMessage(err) }, 'request failed');
      return reply(res, 500, { code: 'E_INTERNAL', message: errorMessage(err) });
    }
  }

  private async route(p: Principal, req: IncomingMessage, res: ServerResponse, url: URL, path: string, method: string, audit: AuditEntry): Promise<void> {
    const route = `${method} ${path}`;
    const query = () => {
      const q = TenantQuerySchema.safeParse(Object.fromEntries(url.searchParams));
      if (!q.success) throw badRequest(issuesFrom('query', q.error.issues));
      return q.data;
    };
    if (route === 'GET /nodes') {
      requireOperator(p, 'GET /nodes');
      return reply(res, 200, this.nodes());
    }
    if (route === 'GET /metrics') {
      requireOperator(p, 'GET /metrics');
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (route === 'GET /functions') {
      const tenant = readScope(p, query().tenant);
      return reply(res, 200, { functions: this.functions.list().filter((f) => tenant === undefined || f.tenant === tenant) });
    }
    if (route === 'POST /functions') {
      const tenant = actingTenant(p, 'deploying');
      const body = await readJson(req);
      // Only a valid name reaches the audit line: the body is the client's, not yet checked.
      const name = NAME.safeParse((body as { name?: unknown } | null)?.name);
      if (name.success) audit.target = `${tenant}/${name.data}`;
      return reply(res, 201, await this.deploy(tenant, body));
    }
    if (route === 'GET /tasks') {
      const tenant = readScope(p, query().tenant);
      const tasks = [...[...this.pending.values()].map((t) => t.record), ...this.finished.values()].filter((t) => tenant === undefined || t.tenant === tenant);
      return reply(res, 200, { tasks: tasks.sort((a, b) => a.placedAt.localeCompare(b.placedAt)) });
    }
    const taskMatch = /^\/tasks\/([^/]+)$/.exec(path);
    if (taskMatch && method === 'GET') {
      const id = decodeURIComponent(taskMatch[1]!);
      const task = this.task(id);
      if (!task) throw new ControllerError('E_NOT_FOUND', `no task ${id} (finished tasks are kept for the last ${KEPT_FINISHED_TASKS})`);
      if (p.kind === 'tenant' && task.tenant !== p.tenant) throw forbidden();
      return reply(res, 200, task);
    }
    const fnMatch = /^\/functions\/([^/]+)(\/invoke)?$/.exec(path);
    if (fnMatch && ((method === 'GET' || method === 'DELETE') && !fnMatch[2])) {
      const name = parseName(fnMatch[1]!);
      const named = query().tenant;
      // The operator reaches one tenant's function by naming the tenant; a tenant only its own.
      const tenant = p.kind === 'operator' ? named : readScope(p, named);
      if (tenant === undefined) throw badRequest([{ path: 'query.tenant', reason: 'the operator names the tenant (?tenant=…)' }]);
      audit.target = `${tenant}/${name}`;
      if (method === 'DELETE') return reply(res, 200, await this.undeploy(tenant, name));
      const fn = this.functions.get(tenant, name);
      if (!fn) throw new ControllerError('E_NOT_FOUND', `no function ${tenant}/${name}`);
      return reply(res, 200, fn);
    }
    if (fnMatch && method === 'POST' && fnMatch[2]) {
      const tenant = actingTenant(p, 'invoking');
      const issues: RequestIssue[] = [];
      const nameParsed = NAME.safeParse(decodeURIComponent(fnMatch[1]!));
      if (!nameParsed.success) issues.push(...issuesFrom('params.name', nameParsed.error.issues));
      const body = InvokeBodySchema.safeParse(await readJson(req));
      if (!body.success) issues.push(...issuesFrom('body', body.error.issues));
      if (issues.length > 0 || !body.success || !nameParsed.success) throw badRequest(issues);
      ownTenant(tenant, body.data.tenant);
      const name = nameParsed.data;
      audit.target = `${tenant}/${name}`;
      const fn = this.functions.get(tenant, name);
      if (!fn) throw new ControllerError('E_NOT_FOUND', `no function ${tenant}/${name} (deploy it with POST /functions)`);
      this.checkInvokeLimits(fn);
      const timeoutMs = body.data.timeoutMs ?? this.options.defaultInvokeTimeoutMs ?? 300_000;
      const { record, done } = this.placeInvocation(fn, body.data.args, timeoutMs);
      audit.target += ` task:${record.taskId}`;
      if (!body.data.wait) return reply(res, 202, record);
      const finished = await done;
      if (finished.status === 'succeeded') return reply(res, 200, finished);
      audit.code = finished.error?.code;
      // Lost node → 502, shutdown → 503; anything the node's engine reported (E_TIMEOUT, E_NO_IMAGE …) → 502.
      const status = finished.error?.code === 'E_CLOSED' ? 503 : 502;
      return reply(res, status, { code: finished.error?.code, message: finished.error?.message, task: finished });
    }
    if (route === 'GET /tokens') {
      requireOperator(p, 'GET /tokens');
      return reply(res, 200, { tokens: this.credentials.list(query().tenant) });
    }
    if (route === 'POST /tokens') {
      requireOperator(p, 'POST /tokens');
      const body = TokenBodySchema.safeParse(await readJson(req));
      if (!body.success) throw badRequest(issuesFrom('body', body.error.issues));
      const issued = await this.credentials.issue(body.data.tenant, body.data.label);
      audit.target = `tenant:${issued.tenant} token:${issued.id}`;
      return reply(res, 201, issued);
    }
    const tokenMatch = /^\/tokens\/([^/]+)$/.exec(path);
    if (tokenMatch && method === 'DELETE') {
      requireOperator(p, 'DELETE /tokens/:id');
      const id = decodeURIComponent(tokenMatch[1]!);
      if (!/^[0-9a-f]{16}$/.test(id)) throw badRequest([{ path: 'params.id', reason: 'a token id is 16 hex digits (GET /tokens lists them)' }]);
      audit.target = `token:${id}`;
      if (!(await this.credentials.revoke(id))) throw new ControllerError('E_NOT_FOUND', `no token ${id}`);
      return reply(res, 200, { revoked: id });
    }
    const limitsMatch = /^\/tenants\/([^/]+)\/limits$/.exec(path);
    if (limitsMatch && (method === 'GET' || method === 'PUT')) {
      const tenant = TENANT_NAME.safeParse(decodeURIComponent(limitsMatch[1]!));
      if (!tenant.success) throw badRequest(issuesFrom('params.tenant', tenant.error.issues));
      audit.target = `tenant:${tenant.data}`;
      if (method === 'GET') {
        readScope(p, tenant.data);
        return reply(res, 200, { tenant: tenant.data, limits: this.credentials.limits(tenant.data), usage: this.usage(tenant.data) });
      }
      requireOperator(p, 'PUT /tenants/:tenant/limits');
      const body = TenantLimitsSchema.safeParse(await readJson(req));
      if (!body.success) throw badRequest(issuesFrom('body', body.error.issues));
      await this.credentials.setLimits(tenant.data, body.data);
      return reply(res, 200, { tenant: tenant.data, limits: body.data, usage: this.usage(tenant.data) });
    }
    throw new ControllerError('E_NOT_FOUND', `no route ${method} ${path}`);
  }

  /**
   * kube-scheduler's extender config has no header field, so the scheduler proves itself by a client
   * certificate the `--tls-client-ca` signed (`tlsConfig.certFile`/`keyFile`), or by the secret in its
   * `urlPrefix` (`…/scheduler/<secret>`, then `/filter` and `/prioritize`).
   */
  private async handleExtender(req: IncomingMessage, res: ServerResponse, path: string, method: string): Promise<void> {
    const m = /^\/scheduler\/(?:([^/]+)\/)?(filter|prioritize)$/.exec(path);
    const secret = m?.[1];
    const byCertificate = secret === undefined && (req.socket as Partial<TLSSocket>).authorized === true;
    const bySecret = secret !== undefined && tokensEqual(secret, this.secrets.extenderSecret);
    if (!m || !(byCertificate || bySecret)) {
      throw new ControllerError('E_UNAUTHORIZED', "the scheduler extender routes need the scheduler's client certificate or the secret urlPrefix (<state-dir>/tokens/extender.token)");
    }
    if (method !== 'POST') throw new ControllerError('E_NOT_FOUND', `the extender's ${m[2]} is POST only`);
    const isFilter = m[2] === 'filter';
    const args = ExtenderArgsSchema.safeParse(await readJson(req));
    if (!args.success) {
      const issues = issuesFrom('body', args.error.issues);
      // kube-scheduler reads Error from the result; a 400 alone would only say "bad status".
      if (isFilter) return reply(res, 400, { FailedNodes: {}, Error: issues.map((i) => `${i.path}: ${i.reason}`).join('; '), code: 'E_BAD_REQUEST', issues });
      throw badRequest(issues);
    }
    const view = { scoring: this.state.scoring, nodeState: (n: string) => this.state.nodeState(n) };
    return reply(res, 200, isFilter ? extenderFilter(args.data, view) : extenderPrioritize(args.data, view));
  }

  /** One line per changing request once it is answered: who (token id, never the token), what, result. */
  private writeAudit(a: AuditEntry, res: ServerResponse): void {
    this.log.info(
      { audit: { who: a.who, action: a.action, ...(a.target ? { target: a.target } : {}), status: res.statusCode, ...(a.code ? { code: a.code } : {}), ...(res.writableFinished ? {} : { aborted: true }) } },
      'audit',
    );
  }
}

/** What an audit line calls a request: its route's pattern, never the path (which holds names and may hold secrets). */
const ROUTE_PATTERNS: [RegExp, string][] = [
  [/^\/nodes$/, '/nodes'],
  [/^\/metrics$/, '/metrics'],
  [/^\/functions$/, '/functions'],
  [/^\/functions\/[^/]+$/, '/functions/:name'],
  [/^\/functions\/[^/]+\/invoke$/, '/functions/:name/invoke'],
  [/^\/tasks$/, '/tasks'],
  [/^\/tasks\/[^/]+$/, '/tasks/:id'],
  [/^\/tokens$/, '/tokens'],
  [/^\/tokens\/[^/]+$/, '/tokens/:id'],
  [/^\/tenants\/[^/]+\/limits$/, '/tenants/:tenant/limits'],
];

/** Errors for another tenant's object name none of it (tenant, function, arguments). */
function forbidden(): ControllerError {
  return new ControllerError('E_FORBIDDEN', "a tenant token reaches its own tenant's functions, invocations and tasks only");
}

function requireOperator(p: Principal, route: string): void {
  if (p.kind !== 'operator') throw new ControllerError('E_FORBIDDEN', `${route} is cluster-wide: it needs the operator token`);
}

/** Deploy and invoke act as one tenant: a tenant token's. The operator holds no functions of its own. */
function actingTenant(p: Principal, what: string): string {
  if (p.kind === 'operator') throw new ControllerError('E_FORBIDDEN', `${what} acts for a tenant: use that tenant's token (POST /tokens makes one)`);
  return p.tenant;
}

/** A tenant named in a body must be the credential's: the credential decides, the body may only agree. */
function ownTenant(tenant: string, named: string | undefined): string {
  if (named !== undefined && named !== tenant) throw forbidden();
  return tenant;
}

/** Reads: a tenant sees its own tenant; the operator every tenant (undefined), or the one it names. */
function readScope(p: Principal, named: string | undefined): string | undefined {
  if (p.kind === 'operator') return named;
  return ownTenant(p.tenant, named);
}

function parseName(raw: string): string {
  const parsed = NAME.safeParse(decodeURIComponent(raw));
  if (!parsed.success) throw badRequest(issuesFrom('params.name', parsed.error.issues));
  return parsed.data;
}

function badRequest(issues: RequestIssue[]): ControllerError {
  return new ControllerError('E_BAD_REQUEST', `invalid request: ${issues.map((i) => `${i.path}: ${i.reason}`).join('; ')}`, issues);
}

function reply(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  if (res.headersSent) return;
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new ControllerError('E_BAD_REQUEST', `request body over ${MAX_BODY_BYTES} B`, [{ path: 'body', reason: 'too large' }]);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ControllerError('E_BAD_REQUEST', `request body is not JSON: ${errorMessage(err)}`, [{ path: 'body', reason: `not JSON: ${errorMessage(err)}` }]);
  }
}
