import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller, FunctionStore, isControllerError } from '../../controller/index';
import { NodeAgent } from '../../agent/index';
import { api, quiet, startController, tokenFor } from './harness';

describe('HTTP API: invalid requests get 400 with every reason and change nothing', () => {
  let ctl: Controller;
  let stateDir: string;
  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-api-'));
    ctl = await startController(stateDir);
  });
  afterAll(async () => {
    await ctl?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a deploy with several faults lists each of them', async () => {
    const res = await api(ctl.url, 'POST', '/functions', { name: 'bad name!', command: [], memoryMiB: 3, surprise: 1 });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('E_BAD_REQUEST');
    const paths = res.body.issues.map((i: { path: string }) => i.path).sort();
    expect(paths).toEqual(['body', 'body.command', 'body.image', 'body.inputs', 'body.memoryMiB', 'body.name']);
    expect((await api(ctl.url, 'GET', '/functions')).body.functions).toEqual([]);
  });

  it('a body that is not JSON, and an invoke with bad fields, each get 400', async () => {
    const notJson = await api(ctl.url, 'POST', '/functions', '{"name": ');
    expect(notJson.status).toBe(400);
    expect(notJson.body.issues[0].reason).toMatch(/not JSON/);
    const bad = await api(ctl.url, 'POST', '/functions/bad%20name/invoke', { args: 'x', timeoutMs: -1, wait: 'yes' });
    expect(bad.status).toBe(400);
    expect(bad.body.issues.map((i: { path: string }) => i.path).sort()).toEqual(['body.args', 'body.timeoutMs', 'body.wait', 'params.name']);
  });

  it('unknown functions, tasks and routes are 404; invoking with no agent is 503 E_NO_NODES', async () => {
    expect((await api(ctl.url, 'POST', '/functions/ghost/invoke', {})).body.code).toBe('E_NOT_FOUND');
    expect((await api(ctl.url, 'GET', '/tasks/nope')).status).toBe(404);
    expect((await api(ctl.url, 'DELETE', '/nodes')).status).toBe(404);
    const deployed = await api(ctl.url, 'POST', '/functions', { name: 'f', image: 'busybox', command: ['true'], memoryMiB: 16, profile: { peakMemoryBytes: 1, largestFileBytes: 2 } });
    expect(deployed.status).toBe(201);
    expect((await api(ctl.url, 'POST', '/functions', { name: 'f', image: 'busybox', command: ['true'], memoryMiB: 16, profile: { peakMemoryBytes: 1, largestFileBytes: 2 } })).status).toBe(409);
    const res = await api(ctl.url, 'POST', '/functions/f/invoke', {});
    expect(res.status).toBe(503);
    expect(res.body.code).toBe('E_NO_NODES');
    expect((await api(ctl.url, 'GET', '/functions/f')).body).toMatchObject({ name: 'f', limitBytes: 16 * 1048576 });
  });

  it('the agent link rejects invalid frames and anything before register, and applies none', async () => {
    const ws = new WebSocket(`${ctl.url.replace('http', 'ws')}/agents`);
    const replies: unknown[] = [];
    ws.on('message', (d) => replies.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.once('open', r));
    ws.send('not json');
    ws.send(JSON.stringify({ type: 'register', node: 'x y', instanceId: '', limitBytes: -1, running: [] }));
    ws.send(JSON.stringify({ type: 'heartbeat', running: [] }));
    await new Promise((r) => setTimeout(r, 300));
    ws.close();
    expect(replies).toHaveLength(3);
    expect(replies.every((m) => (m as { type: string }).type === 'protocol-error')).toBe(true);
    expect((replies[1] as { message: string }).message).toMatch(/message\.node.*message\.instanceId.*message\.limitBytes/);
    expect((await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes).toEqual([]);
  });

  it('metrics come from the controller\'s own registry', async () => {
    const res = await fetch(`${ctl.url}/metrics`, { headers: { authorization: `Bearer ${tokenFor(ctl.url, 'operator')}` } });
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/# TYPE ephemera_schedule_seconds histogram/);
    expect(text).toMatch(/ephemera_invocations_total\{tenant="default",function="f",outcome="no_capacity"\} 1/);
    expect(text).not.toMatch(/process_cpu_seconds_total/);
  });
});

describe('durable function store', () => {
  it('an invalid functions.json stops the controller with E_STATE instead of starting empty', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-store-'));
    try {
      await writeFile(path.join(dir, 'functions.json'), '{"version": 1, "functions": [{"name": 3}]}');
      const err = await FunctionStore.open(dir).catch((e: unknown) => e);
      expect(isControllerError(err, 'E_STATE')).toBe(true);
      await writeFile(path.join(dir, 'functions.json'), '{"version": 1, "functions": []}');
      const store = await FunctionStore.open(dir);
      await store.put({ tenant: 't', name: 'f', image: 'i', command: ['c'], limitBytes: 1, profile: { peakMemoryBytes: 1, largestFileBytes: 2, source: 'declared', inputs: 0, at: 'now' }, deployedAt: 'now' });
      expect((await FunctionStore.open(dir)).get('t', 'f')?.profile.largestFileBytes).toBe(2);
      expect(JSON.parse(await readFile(path.join(dir, 'functions.json'), 'utf8')).functions).toHaveLength(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('agent link token', () => {
  let ctl: Controller;
  let stateDir: string;
  // The link is what is tested: an executor that is never asked to run anything.
  const idle = {
    run: () => Promise.reject(new Error('not used')),
    profile: () => Promise.reject(new Error('not used')),
    recover: async () => 0,
    close: async () => undefined,
  };
  const agent = (name: string, token?: string) =>
    NodeAgent.start({ controllerUrl: ctl.url, name, limitBytes: 1024 * 1048576, executor: idle, reconnectMinMs: 100, reconnectMaxMs: 200, recoverOnStart: false, logger: quiet, ...(token ? { token } : {}) });
  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-token-'));
    ctl = await startController(stateDir, { agentToken: 'a'.repeat(64) });
  });
  afterAll(async () => {
    await ctl?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('refuses an agent without the token or with another one (401, never registered); admits the right one', async () => {
    const none = await agent('n-none');
    const wrong = await agent('n-wrong', 'b'.repeat(64));
    const raw = await new Promise<number | undefined>((resolve) => {
      const ws = new WebSocket(`${ctl.url.replace('http', 'ws')}/agents`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(undefined));
      ws.on('error', () => undefined);
    });
    expect(raw).toBe(401);
    const right = await agent('n-right', 'a'.repeat(64));
    try {
      await right.registered();
      await new Promise((r) => setTimeout(r, 500)); // the refused ones have retried a few times meanwhile
      const nodes = (await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes.map((n: { name: string }) => n.name);
      expect(nodes).toEqual(['n-right']);
    } finally {
      await Promise.all([none.close(), wrong.close(), right.close()]);
    }
  });
});
