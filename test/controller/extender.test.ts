import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTenantToken } from '../../link/index';
import {
  ClusterState,
  Controller,
  EXTENDER_TOKEN_NAME,
  OPERATOR_TOKEN_NAME,
  ExtenderArgsSchema,
  extenderFilter,
  extenderPrioritize,
  parseQuantity,
  PROFILE_MEM_ANNOTATION,
} from '../../controller/index';
import { MiB, type Scoring } from '../../policy';

/** A pod as kube-scheduler serialises it inside ExtenderArgs (core/v1 JSON, trimmed to what matters). */
function pod(name: string, limit: string, profileMem?: string) {
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name,
      namespace: 'fns',
      uid: `uid-${name}`,
      ...(profileMem ? { annotations: { [PROFILE_MEM_ANNOTATION]: profileMem } } : {}),
    },
    spec: {
      containers: [
        { name: 'fn', image: 'busybox', resources: { limits: { cpu: '500m', memory: limit }, requests: { memory: limit } } },
      ],
      schedulerName: 'default-scheduler',
    },
    status: { phase: 'Pending' },
  };
}

function node(name: string, allocatable: string) {
  return {
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    spec: {},
    status: { capacity: { cpu: '2', memory: '2Gi', pods: '110' }, allocatable: { cpu: '2', memory: allocatable, pods: '110' } },
  };
}

/** `ExtenderArgs` with `nodeCacheCapable: false`: full node objects, NodeNames null. */
function argsWithNodes(p: object, names: string[]) {
  return { Pod: p, Nodes: { metadata: {}, items: names.map((n) => node(n, '1Gi')) }, NodeNames: null };
}

const TRACE: [string, string, string][] = [
  ['io-intense-task1', '150Mi', '258Mi'],
  ['cpu-intense-task1', '300Mi', '4Mi'],
  ['io-intense-task2', '150Mi', '258Mi'],
  ['io-intense-task3', '150Mi', '258Mi'],
  ['cpu-intense-task2', '300Mi', '4Mi'],
  ['io-intense-task4', '150Mi', '258Mi'],
];

describe('quantities', () => {
  it('parses the resource.Quantity forms memory limits use', () => {
    expect(parseQuantity('128Mi')).toBe(128 * MiB);
    expect(parseQuantity('1Gi')).toBe(1024 * MiB);
    expect(parseQuantity('1.5Gi')).toBe(1536 * MiB);
    expect(parseQuantity('129M')).toBe(129e6);
    expect(parseQuantity('129e6')).toBe(129e6);
    expect(parseQuantity('134217728')).toBe(134217728);
    expect(parseQuantity('16318576Ki')).toBe(16318576 * 1024);
    expect(parseQuantity('500m')).toBe(1);
    for (const bad of ['', 'Mi', '12 Mi', '1.2.3', '-5Mi', '12MiB']) expect(() => parseQuantity(bad)).toThrow(RangeError);
  });
});

describe('scheduler extender on upstream ExtenderArgs bodies', () => {
  for (const [scoring, expected] of [
    ['complementarity', { node1: ['io-intense-task1', 'cpu-intense-task1', 'io-intense-task2', 'io-intense-task3'], node2: ['cpu-intense-task2', 'io-intense-task4'] }],
    ['most-free', { node1: ['io-intense-task1', 'io-intense-task2', 'io-intense-task3', 'io-intense-task4'], node2: ['cpu-intense-task1', 'cpu-intense-task2'] }],
  ] as [Scoring, Record<string, string[]>][]) {
    it(`the six-task trace: the top-scored host each time gives the policy's ${scoring} placements`, () => {
      const state = new ClusterState({ scoring });
      const view = { scoring, nodeState: (n: string) => state.nodeState(n) };
      state.register('node1', 'a', 1024 * MiB, []);
      state.register('node2', 'b', 1024 * MiB, []);
      const placed: Record<string, string[]> = { node1: [], node2: [] };
      for (const [name, limit, mem] of TRACE) {
        const args = ExtenderArgsSchema.parse(JSON.parse(JSON.stringify(argsWithNodes(pod(name, limit, mem), ['node1', 'node2']))));
        const filtered = extenderFilter(args, view);
        expect(filtered.Error).toBe('');
        // Filtered out exactly where N_alloc + T_lim > N_lim (node1 cannot take cpu2 at 750 + 300).
        const overfull = ['node1', 'node2'].filter((n) => state.nodeState(n)!.allocBytes + parseQuantity(limit) > 1024 * MiB);
        expect(Object.keys(filtered.FailedNodes)).toEqual(overfull);
        const priorities = extenderPrioritize(args, view);
        for (const p of priorities) {
          expect(Object.keys(p).sort()).toEqual(['Host', 'Score']);
          expect(Number.isInteger(p.Score) && p.Score >= 0 && p.Score <= 10).toBe(true);
        }
        const top = priorities.filter((p) => p.Score === 10);
        expect(top).toHaveLength(1);
        // Bound: the controller's view learns of the pod as the agent on that node would report it.
        state.place(top[0]!.Host, { taskId: name, tenant: 'fns', function: name, limitBytes: parseQuantity(limit), memBytes: parseQuantity(mem), startedAt: 0 });
        placed[top[0]!.Host]!.push(name);
      }
      expect(placed).toEqual(expected);
    });
  }

  it('filter fails nodes whose N_alloc + T_lim exceeds allocatable, keeps the Nodes shape, and names the reason', () => {
    const state = new ClusterState({ scoring: 'complementarity' });
    state.register('full', 'a', 1024 * MiB, [{ taskId: 'x', tenant: 't', function: 'f', limitBytes: 900 * MiB, memBytes: 0, startedAt: 0 }]);
    const body = { Pod: pod('p', '150Mi'), Nodes: { metadata: {}, items: [node('full', '1Gi'), node('empty', '1Gi'), node('small', '100Mi')] } };
    const result = extenderFilter(ExtenderArgsSchema.parse(body), { scoring: 'complementarity', nodeState: (n) => state.nodeState(n) });
    expect(result.Nodes!.items.map((n) => n.metadata.name)).toEqual(['empty']);
    expect(Object.keys(result.FailedNodes).sort()).toEqual(['full', 'small']);
    expect(result.FailedNodes.full).toMatch(/exceeds the node's unallocated/);
    expect(result.Error).toBe('');
    expect(result.NodeNames).toBeUndefined();
  });

  it('nodeCacheCapable (NodeNames only): capacity comes from the registered agents; unknown nodes pass unjudged', () => {
    const state = new ClusterState({ scoring: 'most-free' });
    state.register('a', 'a', 200 * MiB, []);
    state.register('b', 'b', 1024 * MiB, []);
    const body = { Pod: pod('p', '300Mi'), Nodes: null, NodeNames: ['a', 'b', 'c'] };
    const view = { scoring: 'most-free' as const, nodeState: (n: string) => state.nodeState(n) };
    const args = ExtenderArgsSchema.parse(body);
    expect(extenderFilter(args, view)).toEqual({ NodeNames: ['b', 'c'], FailedNodes: { a: expect.any(String) }, Error: '' });
    expect(extenderPrioritize(args, view)).toEqual([
      { Host: 'a', Score: 0 },
      { Host: 'b', Score: 10 },
      { Host: 'c', Score: 0 },
    ]);
  });

  it('a pod without a memory limit is not judged: every node passes and scores 0', () => {
    const noLimit = { ...pod('p', '1Mi'), spec: { containers: [{ name: 'fn', image: 'busybox' }] } };
    const args = ExtenderArgsSchema.parse(argsWithNodes(noLimit, ['n1', 'n2']));
    const view = { scoring: 'complementarity' as const, nodeState: () => undefined };
    expect(extenderFilter(args, view).Nodes!.items).toHaveLength(2);
    expect(extenderPrioritize(args, view).map((p) => p.Score)).toEqual([0, 0]);
  });
});

describe('scheduler extender over HTTP (the controller serves <urlPrefix>/filter and <urlPrefix>/prioritize)', () => {
  let controller: Controller;
  let stateDir: string;
  /** kube-scheduler's urlPrefix: the secret path segment is its only credential (its config has no header field). */
  let prefix: string;
  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-ext-'));
    controller = await Controller.start({ stateDir, port: 0, logger: pino({ level: 'silent' }) });
    prefix = `${controller.url}/scheduler/${await readTenantToken(stateDir, EXTENDER_TOKEN_NAME)}`;
  });
  afterAll(async () => {
    await controller?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('answers ExtenderFilterResult and HostPriorityList with the upstream field names', async () => {
    const body = { Pod: pod('p', '600Mi', '10Mi'), Nodes: { metadata: {}, items: [node('big', '1Gi'), node('tiny', '512Mi')] }, NodeNames: null };
    const filter = await fetch(`${prefix}/filter`, { method: 'POST', body: JSON.stringify(body) });
    expect(filter.status).toBe(200);
    const f = (await filter.json()) as Record<string, unknown>;
    expect(Object.keys(f).sort()).toEqual(['Error', 'FailedNodes', 'Nodes']);
    expect((f.Nodes as { items: { metadata: { name: string } }[] }).items.map((n) => n.metadata.name)).toEqual(['big']);
    expect(Object.keys(f.FailedNodes as object)).toEqual(['tiny']);
    const prio = await fetch(`${prefix}/prioritize`, { method: 'POST', body: JSON.stringify(body) });
    expect(await prio.json()).toEqual([
      { Host: 'big', Score: 10 },
      { Host: 'tiny', Score: 0 },
    ]);
  });

  it('a malformed ExtenderArgs gets 400 with an Error the scheduler can log', async () => {
    const res = await fetch(`${prefix}/filter`, { method: 'POST', body: JSON.stringify({ Pod: { spec: 'x' } }) });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { Error: string; code: string; issues: { path: string }[] };
    expect(body.code).toBe('E_BAD_REQUEST');
    expect(body.Error).toMatch(/body\.Pod\.spec/);
    expect(body.issues.map((i) => i.path)).toContain('body.Pod.spec');
  });

  it('without the secret prefix (none, a wrong one, or a tenant or operator bearer token) the extender routes answer 401', async () => {
    const body = JSON.stringify({ Pod: pod('p', '64Mi'), Nodes: null, NodeNames: ['a'] });
    const operator = await readTenantToken(stateDir, OPERATOR_TOKEN_NAME);
    for (const [url, headers] of [
      [`${controller.url}/scheduler/filter`, {}],
      [`${controller.url}/scheduler/prioritize`, {}],
      [`${controller.url}/scheduler/${'0'.repeat(64)}/filter`, {}],
      [`${controller.url}/scheduler/filter`, { authorization: `Bearer ${operator}` }],
    ] as [string, Record<string, string>][]) {
      const res = await fetch(url, { method: 'POST', body, headers });
      expect(res.status, url).toBe(401);
      expect(((await res.json()) as { code: string }).code).toBe('E_UNAUTHORIZED');
    }
  });
});
