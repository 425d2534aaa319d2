import { randomUUID } from 'node:crypto';
import type pino from 'pino';
import WebSocket from 'ws';
import { ControllerError, errorMessage } from '../controller/errors';
import { createLogger } from '../controller/log';
import {
  AGENT_PATH,
  decodeControllerMessage,
  encode,
  type AgentMessage,
  type ControllerMessage,
  type RunningTask,
} from '../controller/protocol';
import { ExecutionError, type TaskExecutor } from './executor';

export interface NodeAgentOptions {
  /** The controller's base URL (`http://host:port`); the agent link is `ws://host:port/agents`. */
  controllerUrl: string;
  name: string;
  /** N_lim, bytes. */
  limitBytes: number;
  executor: TaskExecutor;
  /** First reconnection delay; doubles up to `reconnectMaxMs` while the controller stays away. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Remove containers an earlier process of this node left (default true). */
  recoverOnStart?: boolean;
  logger?: pino.Logger;
  /** The controller's agent token, sent as `Authorization: Bearer …` when the link opens. */
  token?: string;
}

type ResultMessage = Extract<AgentMessage, { type: 'result' }>;

/**
 * The node agent: registers its N_lim and running tasks with the controller, runs what it is sent,
 * reports results. It outlives the controller: when the link drops it keeps its tasks running,
 * reconnects with backoff and re-registers them, so a restarted controller rebuilds its node
 * states from the agents. Results that finish while no controller listens are held and reported
 * after the next registration (the register lists those tasks as still running so that their
 * capacity is accounted until the result lands).
 */
export class NodeAgent {
  readonly name: string;
  readonly instanceId = randomUUID();
  readonly limitBytes: number;
  private readonly options: NodeAgentOptions;
  private readonly log: pino.Logger;
  private readonly running = new Map<string, RunningTask>();
  private readonly unsent = new Map<string, { task: RunningTask; result: ResultMessage }>();
  private ws: WebSocket | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private backoffMs: number;
  private lastHeard = 0;
  private timeoutMs = 0;
  private closed = false;
  private registeredWaiters: (() => void)[] = [];
  private registrations = 0;

  private constructor(options: NodeAgentOptions) {
    if (!(options.limitBytes > 0)) throw new ControllerError('E_BAD_ARGS', `node limit must be > 0 bytes, got ${options.limitBytes}`);
    this.options = options;
    this.name = options.name;
    this.limitBytes = options.limitBytes;
    this.backoffMs = options.reconnectMinMs ?? 200;
    this.log = options.logger ?? createLogger('agent');
  }

  static async start(options: NodeAgentOptions): Promise<NodeAgent> {
    const agent = new NodeAgent(options);
    if (options.recoverOnStart ?? true) {
      const removed = await options.executor.recover();
      if (removed > 0) agent.log.warn({ node: agent.name, removed }, 'removed containers an earlier agent process left running');
    }
    agent.connect();
    return agent;
  }

  /** How many times the agent has registered (a reconnection counts again). */
  get registrationCount(): number {
    return this.registrations;
  }

  /** Resolves at the next successful registration (or at once if registered more than `after` times). */
  registered(after = 0, timeoutMs = 30_000): Promise<void> {
    if (this.registrations > after) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new ControllerError('E_CLOSED', `${this.name} did not register within ${timeoutMs} ms`)), timeoutMs);
      this.registeredWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  runningTasks(): RunningTask[] {
    return [...this.running.values()];
  }

  /** Leaves the controller and stops every task. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopTimers();
    this.ws?.close(1001, 'agent shutting down');
    this.ws = undefined;
    await this.options.executor.close();
  }

  private linkUrl(): string {
    const u = new URL(this.options.controllerUrl);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    u.pathname = AGENT_PATH;
    return u.toString();
  }

  private stopTimers(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.heartbeat = undefined;
    this.reconnectTimer = undefined;
  }

  private connect(): void {
    if (this.closed) return;
    const ws = new WebSocket(this.linkUrl(), {
      handshakeTimeout: 5000,
      maxPayload: 16 * 1024 * 1024,
      ...(this.options.token ? { headers: { authorization: `Bearer ${this.options.token}` } } : {}),
    });
    this.ws = ws;
    ws.on('open', () => {
      this.lastHeard = Date.now();
      const running = [...this.running.values(), ...[...this.unsent.values()].map((u) => u.task)];
      this.send({ type: 'register', node: this.name, instanceId: this.instanceId, limitBytes: this.limitBytes, running });
    });
    ws.on('message', (data) => {
      this.lastHeard = Date.now();
      let message: ControllerMessage;
      try {
        message = decodeControllerMessage(data);
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, 'invalid controller message ignored');
        return;
      }
      this.onMessage(message);
    });
    ws.on('pong', () => (this.lastHeard = Date.now()));
    ws.on('unexpected-response', (_req, res) => {
      // A refusal is a configuration error (wrong or missing token): say so plainly, keep retrying
      // (the controller's token file may be fixed), never print the token.
      if (res.statusCode === 401) this.log.error({ node: this.name, code: 'E_AUTH' }, 'the controller refused this agent: wrong or missing agent token');
      else this.log.warn({ node: this.name, status: res.statusCode }, 'the controller refused the agent link');
      ws.terminate();
    });
    ws.on('error', (err) => this.log.debug({ err: err.message }, 'controller link error'));
    ws.on('close', () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.stopTimers();
      if (this.closed) return;
      this.log.warn({ node: this.name, retryMs: this.backoffMs, running: this.running.size }, 'controller link down; tasks keep running, reconnecting');
      this.reconnectTimer = setTimeout(() => this.connect(), this.backoffMs);
      this.reconnectTimer.unref();
      this.backoffMs = Math.min(this.backoffMs * 2, this.options.reconnectMaxMs ?? 5000);
    });
  }

  private onMessage(message: ControllerMessage): void {
    switch (message.type) {
      case 'welcome': {
        this.backoffMs = this.options.reconnectMinMs ?? 200;
        this.timeoutMs = message.timeoutMs;
        if (this.heartbeat) clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => this.beat(), message.heartbeatMs);
        this.heartbeat.unref();
        for (const { result } of this.unsent.values()) this.send(result);
        this.unsent.clear();
        this.registrations++;
        this.log.info({ node: this.name, limitMiB: this.limitBytes / 1048576, running: this.running.size }, 'registered with the controller');
        for (const w of this.registeredWaiters.splice(0)) w();
        return;
      }
      case 'execute':
        void this.execute(message);
        return;
      case 'profile':
        void this.profile(message);
        return;
      case 'reject':
        this.log.error({ code: message.code, message: message.message }, 'controller rejected this agent');
        return;
      case 'protocol-error':
        this.log.warn({ message: message.message }, 'controller reports a protocol error');
        return;
    }
  }

  private beat(): void {
    const ws = this.ws;
    if (!ws) return;
    // The controller answers pings at the protocol level: silence past its timeout means it is gone.
    if (Date.now() - this.lastHeard > this.timeoutMs) {
      this.log.warn({ node: this.name, silentMs: Date.now() - this.lastHeard }, 'controller silent past the timeout; reconnecting');
      ws.terminate();
      return;
    }
    ws.ping();
    this.send({ type: 'heartbeat', running: [...this.running.values()] });
  }

  private send(message: AgentMessage): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(encode(message));
    return true;
  }

  private async execute(message: Extract<ControllerMessage, { type: 'execute' }>): Promise<void> {
    const { task } = message;
    if (this.running.has(task.taskId)) return;
    this.running.set(task.taskId, task);
    let result: ResultMessage;
    try {
      const outcome = await this.options.executor.run(task, message.fn, message.args, { timeoutMs: message.timeoutMs });
      result = { type: 'result', taskId: task.taskId, outcome };
    } catch (err) {
      const code = err instanceof ExecutionError ? err.code : 'E_EXECUTION';
      result = { type: 'result', taskId: task.taskId, error: { code, message: errorMessage(err) } };
    }
    this.running.delete(task.taskId);
    if (!this.send(result)) this.unsent.set(task.taskId, { task, result });
  }

  private async profile(message: Extract<ControllerMessage, { type: 'profile' }>): Promise<void> {
    try {
      const profile = await this.options.executor.profile(message.fn, message.inputs, { timeoutMs: message.timeoutMs });
      this.send({ type: 'profile-result', requestId: message.requestId, profile });
    } catch (err) {
      const code = err instanceof ExecutionError ? err.code : 'E_EXECUTION';
      this.send({ type: 'profile-result', requestId: message.requestId, error: { code, message: errorMessage(err) } });
    }
  }
}
