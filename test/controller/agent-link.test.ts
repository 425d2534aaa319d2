/**
 * The agent ⇄ controller link without Docker: a real Controller on 127.0.0.1:0, a real NodeAgent
 * whose executor holds each task until the test releases it, and real TCP in between (a proxy that
 * can cut the connection without closing it, as a partition or a frozen host would).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NodeAgent, type TaskExecutor } from '../../agent/index';
import type { Controller } from '../../controller/index';
import type { InvocationOutcome, RunningTask } from '../../link/index';
import { api, NODE_TIMEOUT_MS, quiet, startController, waitFor } from './harness';

/** Runs nothing: each task waits for `release()`, so a test decides when a result exists. */
class HeldExecutor implements TaskExecutor {
  readonly started: RunningTask[] = [];
  private readonly waiting: (() => void)[] = [];

  run(task: RunningTask): Promise<InvocationOutcome> {
    this.started.push(task);
    return new Promise((resolve) => this.waiting.push(() => resolve({ exitCode: 0, stdout: `ran ${task.taskId}`, stderr: '', execMs: 1, startMs: 1, oomKills: 0 })));
  }

  release(): void {
    for (const done of this.waiting.splice(0)) done();
  }

  profile(): Promise<never> {
    return Promise.reject(new Error('not used'));
  }

  async recover(): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {
    this.release();
  }
}

/**
 * A TCP forwarder that can cut: from `cut()` on, bytes are dropped both ways and new connections
 * are held unanswered, but no socket is closed, so neither end hears of it but by its heartbeat.
 */
class Partition {
  private readonly server = net.createServer((client) => this.accept(client));
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket; cut: boolean }>();
  private readonly held = new Set<net.Socket>();
  private isCut = false;

  constructor(private readonly targetPort: number) {}

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as net.AddressInfo).port;
  }

  cut(): void {
    this.isCut = true;
    for (const p of this.pairs) p.cut = true;
  }

  /** New connections go through again; the ones held during the cut are refused so their peers retry. */
  heal(): void {
    this.isCut = false;
    for (const c of this.held) c.destroy();
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    for (const c of this.held) c.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.isCut) {
      this.held.add(client);
      client.once('close', () => this.held.delete(client));
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    upstream.on('error', () => undefined);
    const pair = { client, upstream, cut: false };
    this.pairs.add(pair);
    client.on('data', (d) => void (pair.cut || upstream.write(d)));
    upstream.on('data', (d) => void (pair.cut || client.write(d)));
    client.once('close', () => pair.cut || upstream.destroy());
    upstream.once('close', () => pair.cut || client.destroy());
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function controllerIn(stateDir: string, port = 0): Promise<Controller> {
  const ctl = await startController(stateDir, { port });
  cleanups.push(() => ctl.close());
  return ctl;
}

async function stateDirFor(name: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `eph-agent-link-${name}-`));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startAgent(url: string, executor: HeldExecutor, reconnect: { min: number; max: number }): Promise<NodeAgent> {
  const agent = await NodeAgent.start({
    controllerUrl: url,
    name: 'n1',
    limitBytes: 1024 * 1048576,
    executor,
    reconnectMinMs: reconnect.min,
    reconnectMaxMs: reconnect.max,
    recoverOnStart: false,
    logger: quiet,
  });
  cleanups.push(() => agent.close());
  return agent;
}

/** Deploys `f` (declared profile: no profiling run) and places one invocation; resolves with its task id. */
async function placeOne(url: string): Promise<string> {
  const deployed = await api(url, 'POST', '/functions', { name: 'f', image: 'busybox', command: ['true'], memoryMiB: 64, profile: { peakMemoryBytes: 1048576, largestFileBytes: 1048576 } });
  expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
  const placed = await api(url, 'POST', '/functions/f/invoke', { wait: false });
  expect(placed.status, JSON.stringify(placed.body)).toBe(202);
  return placed.body.taskId as string;
}

async function nodeStatus(url: string, node: string): Promise<string | undefined> {
  const nodes = (await api(url, 'GET', '/nodes', undefined, 'operator')).body.nodes as { name: string; status: string }[];
  return nodes.find((n) => n.name === node)?.status;
}

describe('agent ⇄ controller link', () => {
  it('a silent agent (connection cut, not closed) is lost by the heartbeat within the node timeout; its task fails E_NODE_LOST; it registers again once the link heals', async () => {
    const ctl = await controllerIn(await stateDirFor('silent'));
    const partition = new Partition(ctl.address.port);
    cleanups.push(() => partition.close());
    const proxyPort = await partition.start();
    const executor = new HeldExecutor();
    const agent = await startAgent(`http://127.0.0.1:${proxyPort}`, executor, { min: 50, max: 200 });
    await agent.registered();
    expect(await nodeStatus(ctl.url, 'n1')).toBe('ready');
    const taskId = await placeOne(ctl.url);
    await waitFor('the task to reach the agent', () => (executor.started.length === 1 ? true : undefined), 5000, 10);

    const cutAt = Date.now();
    partition.cut();
    await waitFor('the node to be lost', async () => ((await nodeStatus(ctl.url, 'n1')) === 'lost' ? true : undefined), 5000, 20);
    const lostAfterMs = Date.now() - cutAt;
    // A ping unanswered for nodeTimeout - heartbeat (800 ms): its timer may have started a little
    // before the cut when the pong was still in flight (a loaded machine delays it), hence the loose
    // lower bound. A closed socket's path would add the grace (another node timeout) and say so below.
    expect(lostAfterMs, `lost after ${lostAfterMs} ms`).toBeGreaterThanOrEqual(NODE_TIMEOUT_MS / 2);
    expect(lostAfterMs, `lost after ${lostAfterMs} ms`).toBeLessThan(NODE_TIMEOUT_MS + 1000);
    const task = (await api(ctl.url, 'GET', `/tasks/${taskId}`)).body;
    expect(task).toMatchObject({ status: 'failed', error: { code: 'E_NODE_LOST' } });
    expect(task.error.message).toMatch(/heartbeat timeout/);

    partition.heal();
    await agent.registered(1, 10_000);
    expect(agent.registrationCount).toBe(2);
    expect(await nodeStatus(ctl.url, 'n1')).toBe('ready');
  });

  it('a controller that goes away is retried with capped exponential backoff; the agent registers with the next one and reports the result there', async () => {
    const stateDir = await stateDirFor('restart');
    const first = await startController(stateDir);
    const port = first.address.port;
    const executor = new HeldExecutor();
    const agent = await startAgent(first.url, executor, { min: 50, max: 300 });
    await agent.registered();
    const taskId = await placeOne(first.url);
    await waitFor('the task to reach the agent', () => (executor.started.length === 1 ? true : undefined), 5000, 10);
    await first.close();

    // Something that takes each connection and drops it at once: each reconnection attempt is seen.
    const attempts: number[] = [];
    const dropper = net.createServer((s) => {
      attempts.push(performance.now());
      s.destroy();
    });
    await new Promise<void>((resolve) => dropper.listen(port, '127.0.0.1', resolve));
    await new Promise((r) => setTimeout(r, 2500));
    await new Promise((resolve) => dropper.close(resolve));
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    // 50, 100, 200, then 300 ms (± 20 % jitter) each: it starts small, grows, and stops growing at the cap.
    expect(attempts.length, `gaps ${gaps.map(Math.round).join(', ')}`).toBeGreaterThanOrEqual(6);
    expect(gaps[0]!).toBeLessThan(250);
    expect(Math.max(...gaps)).toBeLessThan(300 * 1.2 + 250);
    for (const g of gaps.slice(-2)) expect(g).toBeGreaterThan(300 * 0.8 - 20);

    const second = await controllerIn(stateDir, port);
    await agent.registered(1, 10_000);
    // The agent's register told the new controller of the task it still runs; its result lands there.
    const nodes = (await api(second.url, 'GET', '/nodes', undefined, 'operator')).body.nodes as { name: string; tasks: { taskId: string }[] }[];
    expect(nodes.find((n) => n.name === 'n1')?.tasks.map((t) => t.taskId)).toEqual([taskId]);
    executor.release();
    const done = await waitFor('the result at the new controller', async () => {
      const { body } = await api(second.url, 'GET', `/tasks/${taskId}`);
      return body.status === 'succeeded' ? body : undefined;
    }, 5000, 20);
    expect(done.outcome.stdout).toBe(`ran ${taskId}`);
  });
});
