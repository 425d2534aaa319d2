import * as net from 'node:net';
import * as readline from 'node:readline';
import { DaemonError } from './errors';
import type { ControlReply, ControlRequest, EvictionReport, MountStats } from './messages';

type RequestBody = ControlRequest extends infer R ? (R extends { seq?: unknown } ? Omit<R, 'seq'> : never) : never;

export interface DaemonClientOptions {
  /** Per request; a daemon that does not answer in time is an E_DAEMON error, never a hang. */
  timeoutMs?: number;
}

/**
 * A control-socket client (the CLI, the engine's tmp provider, tests). Replies come back in request
 * order on a connection, so requests are matched to replies by position; `seq` is added anyway so
 * a reply can be checked against its request.
 */
export class DaemonClient {
  private readonly waiting: Array<{ seq: number; resolve: (r: ControlReply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  private nextSeq = 1;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    const lines = readline.createInterface({ input: socket, crlfDelay: Infinity });
    lines.on('line', (line) => {
      const w = this.waiting.shift();
      if (!w) return;
      clearTimeout(w.timer);
      try {
        w.resolve(JSON.parse(line) as ControlReply);
      } catch (e) {
        w.reject(new DaemonError('E_DAEMON', `unreadable reply from the daemon: ${(e as Error).message}`));
      }
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      for (const w of this.waiting.splice(0)) {
        clearTimeout(w.timer);
        w.reject(this.failure);
      }
    };
    socket.on('error', (e) => fail(new DaemonError('E_DAEMON', `control socket: ${e.message}`)));
    socket.on('close', () => fail(new DaemonError('E_DAEMON', 'the daemon closed the control connection')));
  }

  static connect(socketPath: string, options: DaemonClientOptions = {}): Promise<DaemonClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      const onError = (e: NodeJS.ErrnoException) =>
        reject(new DaemonError('E_DAEMON', `cannot reach the node daemon at ${socketPath}: ${e.code ?? e.message} (is \`ephemera node-daemon\` running?)`));
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new DaemonClient(socket, options.timeoutMs ?? 60_000));
      });
    });
  }

  /** Sends one request and resolves with its reply, error replies included. */
  request(body: RequestBody): Promise<ControlReply> {
    return this.send(JSON.stringify({ ...body, seq: this.nextSeq }));
  }

  /** Sends a raw line (tests of malformed input). */
  send(line: string): Promise<ControlReply> {
    if (this.failure) return Promise.reject(this.failure);
    const seq = this.nextSeq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiting.findIndex((w) => w.seq === seq);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(new DaemonError('E_DAEMON', `the daemon did not answer within ${this.timeoutMs} ms`));
        this.socket.destroy(); // later replies would be matched to the wrong requests
      }, this.timeoutMs);
      this.waiting.push({ seq, resolve, reject, timer });
      this.socket.write(line.replace(/\n/g, ' ') + '\n');
    });
  }

  /** Like `request`, but an error reply throws a DaemonError with its code. */
  async call<T = Record<string, unknown>>(body: RequestBody): Promise<T> {
    const reply = await this.request(body);
    if (!reply.ok) throw new DaemonError(reply.code as never, reply.message);
    return reply as unknown as T;
  }

  addMount(m: Omit<Extract<RequestBody, { type: 'add-mount' }>, 'type'>): Promise<{ mount: MountStats }> {
    return this.call({ type: 'add-mount', ...m });
  }
  removeMount(id: string): Promise<unknown> {
    return this.call({ type: 'remove-mount', id });
  }
  detachCgroup(id: string): Promise<{ eviction: EvictionReport }> {
    return this.call({ type: 'detach-cgroup', id });
  }
  setBudget(id: string, budget: number): Promise<{ eviction: EvictionReport; openBytesOverBudget: number }> {
    return this.call({ type: 'set-budget', id, budget });
  }
  setQuotas(id: string, quotas: { sizeQuota?: number; inodeQuota?: number }): Promise<{ sizeQuota: number; inodeQuota: number }> {
    return this.call({ type: 'set-quotas', id, ...quotas });
  }
  evict(id: string, bytes: number, urgent = false): Promise<{ eviction: EvictionReport }> {
    return this.call({ type: 'evict', id, bytes, urgent });
  }
  promote(id: string): Promise<{ promoted: number; bytes: number }> {
    return this.call({ type: 'promote', id });
  }
  async stats(id: string, inodes = false): Promise<MountStats> {
    const r = await this.call<{ mounts: MountStats[] }>({ type: 'stats', id, inodes });
    return r.mounts[0]!;
  }
  async allStats(): Promise<MountStats[]> {
    return (await this.call<{ mounts: MountStats[] }>({ type: 'stats' })).mounts;
  }
  async list(): Promise<Array<{ id: string; path: string; owner: string }>> {
    return (await this.call<{ mounts: Array<{ id: string; path: string; owner: string }> }>({ type: 'list' })).mounts;
  }
  async metrics(): Promise<string> {
    return (await this.call<{ text: string }>({ type: 'metrics' })).text;
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}
