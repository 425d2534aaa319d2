import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NodeAgent } from '../../agent/index';
import type { Controller, TaskRecord } from '../../controller/index';
import { BUSYBOX_RECIPE, type Engine } from '../../engine/index';
import { MiB, parseSchedulerTrace, type Scoring } from '../../policy';
import { ensureDocker, testRunLabels } from '../support/docker';
import { api, NODE_TIMEOUT_MS, spawnAgentProcess, startAgent, startController, waitFor, waitForTask } from './harness';

const docker = await ensureDocker();
const labels = testRunLabels('controller');
const [labelKey, labelValue] = Object.entries(labels)[0]!;
/** Unique per run so a concurrent run's agents (and their orphan cleanup) never touch ours; name order is kept. */
const prefix = labelValue.replace(/[^A-Za-z0-9-]/g, '-');
const node1 = `${prefix}-node1`;
const node2 = `${prefix}-node2`;

const TRACE_FILE = path.join(__dirname, '..', '..', 'policy', 'traces', 'six-tasks.txt');

describe.skipIf(docker.skipReason !== undefined)('controller + node agents on real containers', () => {
  let engine: Engine;
  let stateDir: string;
  const controllers: Controller[] = [];
  const agents: NodeAgent[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    engine = docker.engine!;
    await engine.ensureImage(BUSYBOX_RECIPE);
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-'));
  }, 240_000);

  afterEach(async () => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    await Promise.all(agents.splice(0).map((a) => a.close()));
    await Promise.all(controllers.splice(0).map((c) => c.close()));
    await engine.removeManaged(labels);
  });

  afterAll(async () => {
    if (engine) {
      await engine.removeManaged(labels);
      expect(await engine.listManaged(labels)).toEqual([]);
    }
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  async function controller(scoring: Scoring = 'complementarity'): Promise<Controller> {
    const c = await startController(stateDir, { scoring });
    controllers.push(c);
    return c;
  }

  async function agent(url: string, name: string, limitMiB = 1024): Promise<NodeAgent> {
    const a = await startAgent(engine, url, name, limitMiB, labels);
    agents.push(a);
    await a.registered();
    return a;
  }

  async function deploy(url: string, name: string, memoryMiB: number, profile: { peakMemoryBytes: number; largestFileBytes: number }) {
    const res = await api(url, 'POST', '/functions', { name, image: 'busybox', command: ['sleep'], memoryMiB, profile, replace: true });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  }

  const expected: Record<Scoring, { [node: string]: { alloc: number; req: number; tasks: string[] } }> = {
    complementarity: {
      node1: { alloc: 750, req: 778, tasks: ['io_intense_task1', 'cpu_intense_task1', 'io_intense_task2', 'io_intense_task3'] },
      node2: { alloc: 450, req: 262, tasks: ['cpu_intense_task2', 'io_intense_task4'] },
    },
    'most-free': {
      node1: { alloc: 600, req: 1032, tasks: ['io_intense_task1', 'io_intense_task2', 'io_intense_task3', 'io_intense_task4'] },
      node2: { alloc: 600, req: 8, tasks: ['cpu_intense_task1', 'cpu_intense_task2'] },
    },
    'min-gap': {
      node1: { alloc: 900, req: 1036, tasks: ['io_intense_task1', 'cpu_intense_task1', 'io_intense_task2', 'io_intense_task3', 'io_intense_task4'] },
      node2: { alloc: 300, req: 4, tasks: ['cpu_intense_task2'] },
    },
  };

  for (const scoring of ['complementarity', 'most-free', 'min-gap'] as Scoring[]) {
    it(`the six-task trace on two 1024 MB agents places as the policy test (${scoring}), each task a running container`, async () => {
      const ctl = await controller(scoring);
      await agent(ctl.url, node1);
      await agent(ctl.url, node2);
      // The trace's profiles (U, F in MB) are declared, as the original's trace supplied them offline.
      const trace = parseSchedulerTrace(await readFile(TRACE_FILE, 'utf8'));
      await deploy(ctl.url, 'io', 150, { peakMemoryBytes: 2 * MiB, largestFileBytes: 256 * MiB });
      await deploy(ctl.url, 'cpu', 300, { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 });
      const sleepS = 6;
      const taskName = new Map<string, string>();
      for (const t of trace) {
        const fn = t.name.startsWith('io') ? 'io' : 'cpu';
        const res = await api(ctl.url, 'POST', `/functions/${fn}/invoke`, { args: [String(sleepS)], wait: false });
        expect(res.status, JSON.stringify(res.body)).toBe(202);
        taskName.set(res.body.taskId, t.name);
      }
      const { body } = await api(ctl.url, 'GET', '/nodes', undefined, 'operator');
      const seen = Object.fromEntries(
        body.nodes.map((n: { name: string; allocBytes: number; reqBytes: number; tasks: { taskId: string; startedAt: number }[] }) => [
          n.name === node1 ? 'node1' : 'node2',
          {
            alloc: n.allocBytes / MiB,
            req: n.reqBytes / MiB,
            tasks: [...n.tasks].sort((a, b) => a.startedAt - b.startedAt).map((x) => taskName.get(x.taskId)!),
          },
        ]),
      );
      // Same-millisecond starts keep insertion order (stable sort), which is arrival order.
      expect(seen).toEqual(expected[scoring]);
      // Every placed task really runs: a container per task with its T_lim as the memory limit.
      const containers = await waitFor('all six containers running', async () => {
        const list = await engine.listManaged(labels);
        const running = list.filter((c) => c.State === 'running' && taskName.has(c.Labels['ephemera.task'] ?? ''));
        return running.length === 6 ? running : undefined;
      }, 30_000, 200);
      for (const c of containers) {
        const inspect = await engine.docker.getContainer(c.Id).inspect();
        const name = taskName.get(c.Labels['ephemera.task']!)!;
        expect(inspect.HostConfig.Memory).toBe((name.startsWith('io') ? 150 : 300) * MiB);
        expect(c.Labels['ephemera.node']).toBe(expected[scoring].node1!.tasks.includes(name) ? node1 : node2);
      }
      const records: TaskRecord[] = await Promise.all([...taskName.keys()].map((id) => waitForTask(ctl.url, id)));
      for (const r of records) {
        expect(r.status, JSON.stringify(r.error)).toBe('succeeded');
        expect(r.outcome!.exitCode).toBe(0);
        expect(r.outcome!.execMs).toBeGreaterThanOrEqual(sleepS * 1000 - 50);
        expect(r.scheduleUs).toBeGreaterThan(0);
      }
      const after = await api(ctl.url, 'GET', '/nodes', undefined, 'operator');
      expect(after.body.nodes.map((n: { allocBytes: number; reqBytes: number }) => [n.allocBytes, n.reqBytes])).toEqual([
        [0, 0],
        [0, 0],
      ]);
    }, 90_000);
  }

  it('deploy runs a real profiling run on an agent and keeps the profile durably', async () => {
    const ctl = await controller();
    await agent(ctl.url, node1, 512);
    const res = await api(ctl.url, 'POST', '/functions', {
      name: 'writer',
      image: 'busybox',
      command: ['/bin/sh', '-c', 'dd if=/dev/zero of=/tmp/out bs=1M count="$0" 2>/dev/null'],
      memoryMiB: 64,
      inputs: [['3'], ['8']],
      replace: true,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.profile).toMatchObject({ source: 'profiled', node: node1, inputs: 2, largestFileBytes: 8 * MiB });
    expect(res.body.profile.peakMemoryBytes).toBeGreaterThan(0);
    expect(res.body.profile.peakMemoryBytes).toBeLessThan(64 * MiB);
    const onDisk = JSON.parse(await readFile(path.join(stateDir, 'functions.json'), 'utf8'));
    expect(onDisk.functions.find((f: { name: string }) => f.name === 'writer').profile).toEqual(res.body.profile);
    // The profiling containers are gone and the node's capacity is back.
    expect((await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes[0]).toMatchObject({ allocBytes: 0, reqBytes: 0 });
    const invoked = await api(ctl.url, 'POST', '/functions/writer/invoke', { args: ['1'] });
    expect(invoked.status, JSON.stringify(invoked.body)).toBe(200);
    expect(invoked.body).toMatchObject({ status: 'succeeded', node: node1, memBytes: res.body.profile.peakMemoryBytes + 8 * MiB });
  }, 90_000);

  it('an agent killed mid-invocation: the task fails, capacity is released, new work goes elsewhere; a restarted agent re-registers and clears its orphans', async () => {
    const ctl = await controller('most-free');
    const victim = await spawnAgentProcess(ctl.url, node1, 1024, [labelKey, labelValue]);
    children.push(victim);
    await deploy(ctl.url, 'sleeper', 100, { peakMemoryBytes: MiB, largestFileBytes: 0 });
    const pending = api(ctl.url, 'POST', '/functions/sleeper/invoke', { args: ['60'] });
    const container = await waitFor('the task container on the doomed node', async () => {
      const list = await engine.listManaged({ ...labels, 'ephemera.node': node1 });
      return list.find((c) => c.State === 'running' && c.Labels['ephemera.task']);
    }, 30_000, 100);
    expect((await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes[0]).toMatchObject({ name: node1, allocBytes: 100 * MiB, reqBytes: MiB });
    const killedAt = Date.now();
    victim.kill('SIGKILL');
    const answer = await pending;
    const noticedMs = Date.now() - killedAt;
    expect(answer.status).toBe(502);
    expect(answer.body.code).toBe('E_NODE_LOST');
    expect(answer.body.task).toMatchObject({ status: 'failed', node: node1, taskId: container.Labels['ephemera.task'] });
    expect(noticedMs).toBeLessThan(NODE_TIMEOUT_MS + 2000);
    const nodes = (await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes;
    expect(nodes[0]).toMatchObject({ name: node1, status: 'lost', allocBytes: 0, reqBytes: 0, tasks: [] });
    // Nothing is left to place on: the controller says so instead of hanging.
    expect((await api(ctl.url, 'POST', '/functions/sleeper/invoke', { args: ['0'] })).body.code).toBe('E_NO_NODES');
    await agent(ctl.url, node2);
    const elsewhere = await api(ctl.url, 'POST', '/functions/sleeper/invoke', { args: ['0'] });
    expect(elsewhere.status, JSON.stringify(elsewhere.body)).toBe(200);
    expect(elsewhere.body.node).toBe(node2);
    // The killed agent's container outlived it; the restarted agent removes it when it registers again.
    expect((await engine.listManaged({ 'ephemera.node': node1 })).length).toBe(1);
    const restarted = await spawnAgentProcess(ctl.url, node1, 1024, [labelKey, labelValue]);
    children.push(restarted);
    expect(await engine.listManaged({ 'ephemera.node': node1 })).toEqual([]);
    const back = (await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes.find((n: { name: string }) => n.name === node1);
    expect(back).toMatchObject({ status: 'ready', allocBytes: 0 });
    const metrics = (await api(ctl.url, 'GET', '/metrics', undefined, 'operator')).body as string;
    expect(metrics).toMatch(/ephemera_invocations_total\{tenant="default",function="sleeper",outcome="node_lost"\} 1/);
    expect(metrics).toMatch(/ephemera_node_events_total\{event="lost"\} 1/);
  }, 120_000);

  it('a restarted controller resyncs running tasks from the agents and still reports their results', async () => {
    const first = await controller();
    const port = first.address.port;
    await agent(first.url, node1);
    await agent(first.url, node2);
    await deploy(first.url, 'io', 150, { peakMemoryBytes: 2 * MiB, largestFileBytes: 256 * MiB });
    await deploy(first.url, 'cpu', 300, { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 });
    const ids: string[] = [];
    for (const fn of ['io', 'cpu', 'io']) {
      const res = await api(first.url, 'POST', `/functions/${fn}/invoke`, { args: ['4'], wait: false });
      expect(res.status).toBe(202);
      ids.push(res.body.taskId);
    }
    const before = (await api(first.url, 'GET', '/nodes', undefined, 'operator')).body.nodes.map((n: { allocBytes: number; reqBytes: number }) => [n.allocBytes, n.reqBytes]);
    const registrations = agents.map((a) => a.registrationCount);
    await first.close();
    controllers.splice(controllers.indexOf(first), 1);
    const second = await startController(stateDir, { port });
    controllers.push(second);
    await Promise.all(agents.map((a, i) => a.registered(registrations[i])));
    const resynced = (await api(second.url, 'GET', '/nodes', undefined, 'operator')).body.nodes;
    expect(resynced.map((n: { allocBytes: number; reqBytes: number }) => [n.allocBytes, n.reqBytes])).toEqual(before);
    expect(resynced.flatMap((n: { tasks: { taskId: string }[] }) => n.tasks.map((t) => t.taskId)).sort()).toEqual([...ids].sort());
    // The functions survived in the state dir.
    expect((await api(second.url, 'GET', '/functions')).body.functions.map((f: { name: string }) => f.name)).toEqual(expect.arrayContaining(['cpu', 'io']));
    for (const id of ids) {
      const r = await waitForTask(second.url, id);
      expect(r.status, JSON.stringify(r.error)).toBe('succeeded');
      expect(r.outcome!.exitCode).toBe(0);
    }
    expect((await api(second.url, 'GET', '/nodes', undefined, 'operator')).body.nodes.map((n: { allocBytes: number }) => n.allocBytes)).toEqual([0, 0]);
  }, 90_000);

  it('no node can fit the task: 503 E_NO_CAPACITY and nothing changes', async () => {
    const ctl = await controller();
    await agent(ctl.url, node1, 128);
    await deploy(ctl.url, 'big', 256, { peakMemoryBytes: MiB, largestFileBytes: 0 });
    const res = await api(ctl.url, 'POST', '/functions/big/invoke', { args: ['0'] });
    expect(res.status).toBe(503);
    expect(res.body.code).toBe('E_NO_CAPACITY');
    expect((await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes[0]).toMatchObject({ allocBytes: 0, tasks: [] });
  }, 60_000);
});
