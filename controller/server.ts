import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type pino from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { tokensEqual } from '../link/index';
import { z } from 'zod';
import { MiB, type Scoring } from '../policy';
import { ControllerError, errorMessage, issuesFrom, type RequestIssue } from './errors';
import { ExtenderArgsSchema, extenderFilter, extenderPrioritize } from './extender';
import { createLogger } from './log';
import { ControllerMetrics } from './metrics';
import {
  AGENT_PATH,
  decodeAgentMessage,
  encode,
  type AgentMessage,
  type ControllerMessage,
  type FunctionRef,
  type InvocationOutcome,
  type ProfileFigures,
  type RunningTask,
} from './protocol';
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
   * Agents must present this token (`Authorization: Bearer …`) to join; a link without it, or with
   * another, is refused before any message. Undefined: any agent that reaches the port may join.
   */
  agentToken?: string;
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
    tenant: NAME.default('default'),
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
    tenant: NAME.default('default'),
    args: z.array(z.string()).default([]),
    timeoutMs: z.number().int().positive().max(3_600_000).optional(),
    /** false: answer 202 as soon as the task is placed; poll `GET /tasks/:id`. */
    wait: z.boolean().default(true),
  })
  .strict();

const TenantQuerySchema = z.object({ tenant: NAME.default('default') });
const MAX_BODY_BYTES = 4 * MiB;
const KEPT_FINISHED_TASKS = 10_000;

interface AgentConnection {
  ws: WebSocket;
  node?: string;
  instanceId?: string;
  watchdog?: NodeJS.Timeout;
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
  readonly heartbeatMs: number;
  readonly nodeTimeoutMs: number;
  private readonly options: ControllerOptions;
  private readonly log: pino.Logger;
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly links = new Map<string, AgentConnection>();
  private readonly connections = new Set<AgentConnection>();
  private readonly lostTimers = new Map<string, NodeJS.Timeout>();
  private readonly pending = new Map<string, PendingTask>();
  private readonly finished = new Map<string, TaskRecord>();
  private readonly profiles = new Map<string, PendingProfile>();
  private closed = false;

  private constructor(options: ControllerOptions, functions: FunctionStore) {
    this.options = options;
    this.functions = functions;
    this.heartbeatMs = options.heartbeatMs ?? 2000;
    this.nodeTimeoutMs = options.nodeTimeoutMs ?? 3 * this.heartbeatMs;
    if (this.nodeTimeoutMs <= this.heartbeatMs) {
      throw new ControllerError('E_BAD_ARGS', `node timeout (${this.nodeTimeoutMs} ms) must exceed the heartbeat interval (${this.heartbeatMs} ms)`);
    }
    this.log = options.logger ?? createLogger('controller');
    this.state = new ClusterState({ scoring: options.scoring ?? 'complementarity', indexedFromNodes: options.indexedFromNodes ?? 256 });
    this.metrics = new ControllerMetrics(this.state);
    this.server = createServer((req, res) => void this.handle(req, res));
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 16 * MiB });
    this.server.on('upgrade', (req, socket: Socket, head) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path !== AGENT_PATH || this.closed) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      const token = options.agentToken;
      const presented = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token !== undefined && (presented === undefined || !tokensEqual(presented, token))) {
        // Never log the presented token.
        this.log.warn({ remote: req.socket.remoteAddress }, 'agent link refused: missing or wrong token');
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws));
    });
  }

  static async start(options: ControllerOptions): Promise<Controller> {
    const functions = await FunctionStore.open(options.stateDir);
    const controller = new Controller(options, functions);
    await new Promise<void>((resolve, reject) => {
      controller.server.once('error', reject);
      controller.server.listen(options.port ?? 7070, options.host ?? '127.0.0.1', () => {
        controller.server.off('error', reject);
        resolve();
      });
    });
    controller.log.info({ url: controller.url, scoring: controller.state.scoring, functions: functions.list().length }, 'controller listening');
    return controller;
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  get url(): string {
    const a = this.address;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}`;
  }

  /** Stops serving: agent links are dropped (agents keep their tasks and reconnect to the next controller). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.lostTimers.values()) clearTimeout(timer);
    for (const c of this.connections) {
      if (c.watchdog) clearTimeout(c.watchdog);
      c.ws.terminate();
    }
    for (const p of this.profiles.values()) {
      clearTimeout(p.timer);
      p.reject(new ControllerError('E_CLOSED', 'the controller is shutting down'));
    }
    for (const p of [...this.pending.values()]) this.completeTask(p.record.taskId, undefined, { code: 'E_CLOSED', message: 'the controller is shutting down' });
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ------------------------------------------------------------------------------------------
  // Agent link

  private accept(ws: WebSocket): void {
    const conn: AgentConnection = { ws };
    this.connections.add(conn);
    this.armWatchdog(conn);
    ws.on('message', (data) => {
      let message: AgentMessage;
      try {
        message = decodeAgentMessage(data);
      } catch (err) {
        this.log.warn({ node: conn.node, err: errorMessage(err) }, 'invalid agent message ignored');
        this.send(conn, { type: 'protocol-error', message: errorMessage(err) });
        return;
      }
      this.armWatchdog(conn);
      this.onAgentMessage(conn, message);
    });
    ws.on('close', () => this.onAgentClose(conn));
    ws.on('error', (err) => this.log.warn({ node: conn.node, err: err.message }, 'agent socket error'));
  }

  private armWatchdog(conn: AgentConnection): void {
    if (conn.watchdog) clearTimeout(conn.watchdog);
    conn.watchdog = setTimeout(() => {
      this.log.warn({ node: conn.node, timeoutMs: this.nodeTimeoutMs }, 'agent silent past the node timeout: lost');
      if (conn.node !== undefined && this.links.get(conn.node) === conn) {
        this.links.delete(conn.node);
        this.loseNode(conn.node, 'heartbeat timeout');
      }
      conn.ws.terminate();
    }, this.nodeTimeoutMs);
    conn.watchdog.unref();
  }

  private onAgentMessage(conn: AgentConnection, message: AgentMessage): void {
    if (message.type === 'register') {
      this.onRegister(conn, message);
      return;
    }
    if (conn.node === undefined || this.links.get(conn.node) !== conn) {
      this.send(conn, { type: 'protocol-error', message: `${message.type} before register` });
      return;
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

  private onRegister(conn: AgentConnection, message: Extract<AgentMessage, { type: 'register' }>): void {
    if (conn.node !== undefined) {
      this.send(conn, { type: 'protocol-error', message: 'register sent twice on one connection' });
      return;
    }
    const { node, instanceId } = message;
    const current = this.links.get(node);
    if (current && current !== conn) {
      if (current.instanceId === instanceId) {
        // The same process reconnected before we saw its old socket close.
        current.node = undefined;
        current.ws.terminate();
      } else {
        this.log.warn({ node, old: current.instanceId, new: instanceId }, 'a new agent process took over the node name; the old link is dropped');
        current.node = undefined;
        current.ws.terminate();
      }
    }
    const lost = this.lostTimers.get(node);
    if (lost) {
      clearTimeout(lost);
      this.lostTimers.delete(node);
    }
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
    this.send(conn, { type: 'welcome', heartbeatMs: this.heartbeatMs, timeoutMs: this.nodeTimeoutMs });
  }

  private onAgentClose(conn: AgentConnection): void {
    this.connections.delete(conn);
    if (conn.watchdog) clearTimeout(conn.watchdog);
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

  private send(conn: AgentConnection, message: ControllerMessage): boolean {
    if (conn.ws.readyState !== conn.ws.OPEN) return false;
    conn.ws.send(encode(message));
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

  /** Deploys a function: profiling run (or declared profile), then a durable record. */
  async deploy(body: unknown): Promise<FunctionRecord> {
    const parsed = DeployBodySchema.safeParse(body);
    const issues: RequestIssue[] = parsed.success ? [] : issuesFrom('body', parsed.error.issues);
    const raw = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    if (raw.inputs === undefined && raw.profile === undefined) {
      issues.push({ path: 'body.inputs', reason: 'give representative inputs for a profiling run, or a declared profile' });
    }
    if (!parsed.success || issues.length > 0) throw badRequest(issues);
    const b = parsed.data;
    if (this.functions.get(b.tenant, b.name) && !b.replace) {
      throw new ControllerError('E_EXISTS', `function ${b.tenant}/${b.name} is already deployed (set "replace": true to redeploy)`);
    }
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
    await this.functions.put(record);
    this.log.info({ fn: `${b.tenant}/${b.name}`, limitMiB: b.memoryMiB, profile }, 'function deployed');
    return record;
  }

  nodes(): { scoring: Scoring; nodes: NodeView[] } {
    return { scoring: this.state.scoring, nodes: this.state.nodes() };
  }

  // ------------------------------------------------------------------------------------------
  // HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://controller');
      const path = url.pathname.replace(/\/+$/, '') || '/';
      const method = req.method ?? 'GET';
      const route = `${method} ${path}`;
      if (route === 'GET /nodes') return reply(res, 200, this.nodes());
      if (route === 'GET /functions') return reply(res, 200, { functions: this.functions.list() });
      if (route === 'GET /metrics') {
        const text = await this.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
        res.end(text);
        return;
      }
      if (route === 'GET /healthz') return reply(res, 200, { ok: true });
      if (route === 'POST /functions') return reply(res, 201, await this.deploy(await readJson(req)));
      if (route === 'POST /scheduler/filter' || route === 'POST /scheduler/prioritize') {
        const args = ExtenderArgsSchema.safeParse(await readJson(req));
        if (!args.success) {
          const issues = issuesFrom('body', args.error.issues);
          // kube-scheduler reads Error from the result; a 400 alone would only say "bad status".
          if (path.endsWith('filter')) return reply(res, 400, { FailedNodes: {}, Error: issues.map((i) => `${i.path}: ${i.reason}`).join('; '), code: 'E_BAD_REQUEST', issues });
          throw badRequest(issues);
        }
        const view = { scoring: this.state.scoring, nodeState: (n: string) => this.state.nodeState(n) };
        return reply(res, 200, path.endsWith('filter') ? extenderFilter(args.data, view) : extenderPrioritize(args.data, view));
      }
      const fnMatch = /^\/functions\/([^/]+)(\/invoke)?$/.exec(path);
      if (fnMatch && (method === 'GET' || (method === 'POST' && fnMatch[2]))) {
        const name = decodeURIComponent(fnMatch[1]!);
        const issues: RequestIssue[] = [];
        const nameParsed = NAME.safeParse(name);
        if (!nameParsed.success) issues.push(...issuesFrom('params.name', nameParsed.error.issues));
        if (method === 'GET') {
          const query = TenantQuerySchema.safeParse(Object.fromEntries(url.searchParams));
          if (!query.success) issues.push(...issuesFrom('query', query.error.issues));
          if (issues.length > 0 || !query.success) throw badRequest(issues);
          const fn = this.functions.get(query.data.tenant, name);
          if (!fn) throw new ControllerError('E_NOT_FOUND', `no function ${query.data.tenant}/${name}`);
          return reply(res, 200, fn);
        }
        const body = InvokeBodySchema.safeParse(await readJson(req));
        if (!body.success) issues.push(...issuesFrom('body', body.error.issues));
        if (issues.length > 0 || !body.success) throw badRequest(issues);
        const fn = this.functions.get(body.data.tenant, name);
        if (!fn) throw new ControllerError('E_NOT_FOUND', `no function ${body.data.tenant}/${name} (deploy it with POST /functions)`);
        const timeoutMs = body.data.timeoutMs ?? this.options.defaultInvokeTimeoutMs ?? 300_000;
        const { record, done } = this.placeInvocation(fn, body.data.args, timeoutMs);
        if (!body.data.wait) return reply(res, 202, record);
        const finished = await done;
        if (finished.status === 'succeeded') return reply(res, 200, finished);
        // Lost node → 502, shutdown → 503; anything the node's engine reported (E_TIMEOUT, E_NO_IMAGE …) → 502.
        const status = finished.error?.code === 'E_CLOSED' ? 503 : 502;
        return reply(res, status, { code: finished.error?.code, message: finished.error?.message, task: finished });
      }
      const taskMatch = /^\/tasks\/([^/]+)$/.exec(path);
      if (taskMatch && method === 'GET') {
        const task = this.task(decodeURIComponent(taskMatch[1]!));
        if (!task) throw new ControllerError('E_NOT_FOUND', `no task ${taskMatch[1]} (finished tasks are kept for the last ${KEPT_FINISHED_TASKS})`);
        return reply(res, 200, task);
      }
      throw new ControllerError('E_NOT_FOUND', `no route ${route}`);
    } catch (err) {
      if (err instanceof ControllerError) return reply(res, err.httpStatus, err.toJSON());
      this.log.error({ err: errorMessage(err) }, 'request failed');
      return reply(res, 500, { code: 'E_INTERNAL', message: errorMessage(err) });
    }
  }
}

function badRequest(issues: RequestIssue[]): ControllerError {
  return new ControllerError('E_BAD_REQUEST', `invalid request: ${issues.map((i) => `${i.path}: ${i.reason}`).join('; ')}`, issues);
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
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
