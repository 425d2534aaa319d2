import { randomUUID } from 'node:crypto';
import type pino from 'pino';
import { createLogger } from '../log/index';
import {
  AGENT_LINK_TENANT,
  AGENT_MAX_FRAME_BYTES,
  AGENT_PATH,
  AGENT_ROLE,
  errorMessage,
  isLinkError,
  LinkClient,
  ToAgent,
  ToController,
  type RunningTask,
  type ToAgentMessage,
  type ToControllerMessage,
} from '../link/index';
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
  /** The controller's agent token, sent in the link's hello. */
  token?: string;
}

type ResultMessage = Extract<ToControllerMessage, { type: 'result' }>;

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
  private readonly link: LinkClient<ToAgentMessage, ToControllerMessage>;
  private readonly running = new Map<string, RunningTask>();
  private readonly unsent = new Map<string, { task: RunningTask; result: ResultMessage }>();
  private heartbeat: NodeJS.Timeout | undefined;
  private registeredWaiters: (() => void)[] = [];
  private registrations = 0;

  private constructor(options: NodeAgentOptions) {
    if (!(options.limitBytes > 0)) throw new ExecutionError('E_BAD_ARGS', `node limit must be > 0 bytes, got ${options.limitBytes}`);
    this.options = options;
    this.name = options.name;
    this.limitBytes = options.limitBytes;
    this.log = options.logger ?? createLogger('agent');
    this.link = new LinkClient<ToAgentMessage, ToControllerMessage>({
      endpoint: { url: linkUrl(options.controllerUrl) },
      tenant: AGENT_LINK_TENANT,
      ...(options.token ? { token: options.token } : {}),
      role: AGENT_ROLE,
      peerId: this.instanceId,
      inbound: ToAgent,
      outbound: ToController,
      reconnect: { initialDelayMs: options.reconnectMinMs ?? 200, maxDelayMs: options.reconnectMaxMs ?? 5000 },
      // A refusal is a configuration error (wrong or missing token): say so plainly and keep trying,
      // the controller's token file may be fixed.
      retryRefused: true,
      onRefused: (err) => this.log.error({ node: this.name, code: err.code }, 'the controller refused this agent: wrong or missing agent token'),
      // The controller's heartbeat: both ends give the other up after the same silence.
      heartbeat: 'server',
      maxFrameBytes: AGENT_MAX_FRAME_BYTES,
      logger: this.log,
      onResync: () => this.register(),
      onMessage: (m) => this.onMessage(m),
      onDisconnect: () => {
        this.stopHeartbeat();
        this.log.warn({ node: this.name, running: this.running.size }, 'controller link down; tasks keep running, reconnecting');
      },
    });
  }

  static async start(options: NodeAgentOptions): Promise<NodeAgent> {
    const agent = new NodeAgent(options);
    if (options.recoverOnStart ?? true) {
      const removed = await options.executor.recover();
      if (removed > 0) agent.log.warn({ node: agent.name, removed }, 'removed containers an earlier agent process left running');
    }
    // The first connection may fail (the controller starts later); the link keeps trying meanwhile.
    agent.link.start().catch((err: unknown) => {
      if (!isLinkError(err, 'E_AUTH') && !isLinkError(err, 'E_WRONG_TENANT')) {
        agent.log.warn({ node: agent.name, err: errorMessage(err) }, 'controller not reachable yet; retrying');
      }
    });
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
      const timer = setTimeout(() => reject(new ExecutionError('E_CLOSED', `${this.name} did not register within ${timeoutMs} ms`)), timeoutMs);
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
    this.stopHeartbeat();
    await this.link.close();
    await this.options.executor.close();
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** After every (re)connection: the controller may have restarted, so it hears everything again. */
  private register(): void {
    const running = [...this.running.values(), ...[...this.unsent.values()].map((u) => u.task)];
    this.send({ type: 'register', node: this.name, instanceId: this.instanceId, limitBytes: this.limitBytes, running });
  }

  private onMessage(message: ToAgentMessage): void {
    switch (message.type) {
      case 'registered': {
        this.stopHeartbeat();
        this.heartbeat = setInterval(() => this.send({ type: 'heartbeat', running: [...this.running.values()] }), message.heartbeatMs);
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
    }
  }

  /** False when no controller is connected (the caller may hold the message for the next one). */
  private send(message: ToControllerMessage): boolean {
    if (!this.link.connected) return false;
    try {
      this.link.send(message);
    } catch (err) {
      if (isLinkError(err, 'E_NOT_CONNECTED')) return false;
      // An invalid message (an executor's outcome out of schema) will not become valid later: not held.
      this.log.error({ node: this.name, type: message.type, err: errorMessage(err) }, 'message to the controller dropped');
    }
    return true;
  }

  private async execute(message: Extract<ToAgentMessage, { type: 'execute' }>): Promise<void> {
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

  private async profile(message: Extract<ToAgentMessage, { type: 'profile' }>): Promise<void> {
    try {
      const profile = await this.options.executor.profile(message.fn, message.inputs, { timeoutMs: message.timeoutMs });
      this.send({ type: 'profile-result', requestId: message.requestId, profile });
    } catch (err) {
      const code = err instanceof ExecutionError ? err.code : 'E_EXECUTION';
      this.send({ type: 'profile-result', requestId: message.requestId, error: { code, message: errorMessage(err) } });
    }
  }
}

/** `http(s)://host:port` → `ws(s)://host:port/agents`; a ws(s) URL keeps its scheme. */
function linkUrl(controllerUrl: string): string {
  const u = new URL(controllerUrl);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  u.pathname = AGENT_PATH;
  return u.toString();
}
