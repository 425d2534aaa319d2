import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller, FunctionStore, isControllerError } from '../../controller/index';
import { NodeAgent } from '../../agent/index';
import { AGENT_LINK_TENANT, isLinkError, LinkClient, ToAgent, ToController, type LinkErrorReply, type ToAgentMessage, type ToControllerMessage } from '../../link/index';
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
    const errors: LinkErrorReply[] = [];
    const peer = rawAgentPeer(ctl.url, undefined, { onPeerError: (e) => errors.push(e) });
    try {
      await peer.start();
      peer.sendRaw('not json');
      peer.sendRaw(JSON.stringify({ type: 'register', node: 'x y', instanceId: '', limitBytes: -1, running: [] }));
      peer.sendRaw(JSON.stringify({ type: 'heartbeat', running: [] }));
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await peer.close();
    }
    expect(errors.map((e) => e.code)).toEqual(['E_BAD_MESSAGE', 'E_BAD_MESSAGE', 'E_PROTOCOL']);
    expect(errors[1]!.message).toMatch(/node.*instanceId.*limitBytes/);
    expect(errors[2]!.message).toMatch(/heartbeat before register/);
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
  const agent = (name: string, token?: string, logger = quiet) =>
    NodeAgent.start({ controllerUrl: ctl.url, name, limitBytes: 1024 * 1048576, executor: idle, reconnectMinMs: 50, reconnectMaxMs: 100, recoverOnStart: false, logger, ...(token ? { token } : {}) });
  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-token-'));
    ctl = await startController(stateDir, { agentToken: 'a'.repeat(64) });
  });
  afterAll(async () => {
    await ctl?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('refuses a hello without the token or with another one (E_AUTH, never registered, retried with backoff); admits the right one', async () => {
    for (const token of [undefined, 'b'.repeat(64)]) {
      const err = await rawAgentPeer(ctl.url, token).start().catch((e: unknown) => e);
      expect(isLinkError(err, 'E_AUTH'), String(err)).toBe(true);
    }
    const refusals = { 'n-none': 0, 'n-wrong': 0 };
    const counting = (name: keyof typeof refusals) =>
      pino({ level: 'error' }, { write: (line: string) => void (JSON.parse(line).msg.includes('refused this agent') && refusals[name]++) });
    const none = await agent('n-none', undefined, counting('n-none'));
    const wrong = await agent('n-wrong', 'b'.repeat(64), counting('n-wrong'));
    const right = await agent('n-right', 'a'.repeat(64));
    try {
      await right.registered();
      await new Promise((r) => setTimeout(r, 500)); // the refused ones retry meanwhile
      const nodes = (await api(ctl.url, 'GET', '/nodes', undefined, 'operator')).body.nodes.map((n: { name: string }) => n.name);
      expect(nodes).toEqual(['n-right']);
      // Kept trying (an operator may fix the token), but with the backoff: 50, 100, 100 … ms apart, not a tight loop.
      for (const n of Object.values(refusals)) {
        expect(n).toBeGreaterThanOrEqual(2);
        expect(n).toBeLessThan(15);
      }
      expect(none.registrationCount + wrong.registrationCount).toBe(0);
    } finally {
      await Promise.all([none.close(), wrong.close(), right.close()]);
    }
  });
});

/** A bare link peer on the agent path: what a wrong or broken agent would send. */
function rawAgentPeer(url: string, token: string | undefined, extra: { onPeerError?: (e: LinkErrorReply) => void } = {}) {
  return new LinkClient<ToAgentMessage, ToControllerMessage>({
    endpoint: { url: `${url.replace(/^http/, 'ws')}/agents` },
    tenant: AGENT_LINK_TENANT,
    ...(token ? { token } : {}),
    role: 'agent',
    inbound: ToAgent,
    outbound: ToController,
    reconnect: false,
    onMessage: () => undefined,
    ...extra,
  });
}
