import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { z } from 'zod';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { decodeMessage, ensureTenantToken, isLinkError, LinkClient, LinkHost, LinkServer, messageSet, readTenantToken, type LinkClientOptions, type LinkErrorReply, type LinkHostOptions } from '../../link/index';
import { ToManager } from '../../link/index';

const Up = messageSet(
  z.object({ type: z.literal('set'), key: z.string().min(1), value: z.number().int() }),
  z.object({ type: z.literal('state'), entries: z.record(z.string(), z.number()) }),
);
const Down = messageSet(z.object({ type: z.literal('ack'), key: z.string() }));
type UpMsg = z.infer<typeof Up.schema>;
type DownMsg = z.infer<typeof Down.schema>;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function setup(tenant = 'acme') {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-link-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const token = await ensureTenantToken(dir, tenant);
  const applied = new Map<string, number>();
  const sessions: string[] = [];
  const makeServer = () => {
    const server = new LinkServer<UpMsg, DownMsg>({
      tenant,
      token,
      listen: { socketPath: path.join(dir, 'link.sock') },
      inbound: Up,
      outbound: Down,
      heartbeat: { intervalMs: 100, timeoutMs: 200 },
      onSession: (s) => sessions.push(s.peerId),
      onMessage: (s, m) => {
        if (m.type === 'set') applied.set(m.key, m.value);
        else for (const [k, v] of Object.entries(m.entries)) applied.set(k, v);
        if (m.type === 'set') s.send({ type: 'ack', key: m.key });
      },
    });
    cleanups.push(() => server.close());
    return server;
  };
  return { dir, token, applied, sessions, makeServer, socketPath: path.join(dir, 'link.sock') };
}

function client(socketPath: string, token: string, opts: { tenant?: string; state?: Map<string, number>; errors?: LinkErrorReply[]; reconnect?: false } = {}) {
  const c = new LinkClient<DownMsg, UpMsg>({
    endpoint: { socketPath },
    tenant: opts.tenant ?? 'acme',
    token,
    role: 'mount',
    inbound: Down,
    outbound: Up,
    reconnect: opts.reconnect ?? { initialDelayMs: 20, maxDelayMs: 200 },
    heartbeat: { intervalMs: 100, timeoutMs: 200 },
    connectTimeoutMs: 2000,
    onMessage: () => undefined,
    onPeerError: (e) => opts.errors?.push(e),
    onResync: () => {
      if (opts.state) c.send({ type: 'state', entries: Object.fromEntries(opts.state) });
    },
  });
  cleanups.push(() => c.close());
  return c;
}

describe('token', () => {
  it('is created 0600 once and reused', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-token-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const a = await ensureTenantToken(dir, 'acme');
    const b = await ensureTenantToken(dir, 'acme');
    expect(a).toBe(b);
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect((await stat(path.join(dir, 'tokens', 'acme.token'))).mode & 0o777).toBe(0o600);
    await expect(readTenantToken(dir, 'other')).rejects.toMatchObject({ code: 'E_TOKEN' });
    await expect(ensureTenantToken(dir, '../evil')).rejects.toMatchObject({ code: 'E_BAD_CONFIG' });
  });
});

describe('link over a Unix socket', () => {
  it('refuses a bad token and another tenant, and applies nothing from them', async () => {
    const env = await setup();
    await env.makeServer().start();
    const bad = client(env.socketPath, 'f'.repeat(64), { reconnect: false });
    const err = await bad.start().catch((e: unknown) => e);
    expect(isLinkError(err, 'E_AUTH')).toBe(true);
    const otherTenant = client(env.socketPath, env.token, { tenant: 'globex', reconnect: false });
    const err2 = await otherTenant.start().catch((e: unknown) => e);
    expect(isLinkError(err2, 'E_WRONG_TENANT')).toBe(true);
    expect(env.sessions).toEqual([]);
    expect(env.applied.size).toBe(0);
    expect((await stat(env.socketPath)).mode & 0o777).toBe(0o600);
  });

  it('answers malformed and unknown messages with an error and applies nothing', async () => {
    const env = await setup();
    await env.makeServer().start();
    const errors: LinkErrorReply[] = [];
    const c = client(env.socketPath, env.token, { errors });
    await c.start();
    c.sendRaw('not json');
    c.sendRaw('[1,2]');
    c.sendRaw(JSON.stringify({ type: 'drop-tables' }));
    c.sendRaw(JSON.stringify({ type: 'set', key: 'x', value: 1.5 }));
    c.sendRaw(JSON.stringify({ type: 'set', key: 'x', value: 1, extra: true }));
    const ack = c.waitFor((m) => m.type === 'ack', 2000);
    c.send({ type: 'set', key: 'ok', value: 7 });
    await ack;
    await waitUntil(() => errors.length === 5, 2000);
    expect(errors.map((e) => e.code)).toEqual(['E_BAD_MESSAGE', 'E_BAD_MESSAGE', 'E_UNKNOWN_MESSAGE', 'E_BAD_MESSAGE', 'E_BAD_MESSAGE']);
    expect(errors[2]!.inReplyTo).toBe('drop-tables');
    expect([...env.applied]).toEqual([['ok', 7]]);
  });

  it('reconnects after the server restarts and resyncs the full state', async () => {
    const env = await setup();
    const first = env.makeServer();
    await first.start();
    const state = new Map([['a', 1]]);
    const c = client(env.socketPath, env.token, { state });
    await c.start();
    await waitUntil(() => env.applied.get('a') === 1, 2000);
    await first.close();
    env.applied.clear();
    state.set('b', 2);
    const second = env.makeServer();
    await second.start();
    await waitUntil(() => env.applied.get('b') === 2 && env.applied.get('a') === 1, 5000);
    expect(c.connections).toBe(2);
  });

  it('drops a peer that stops answering pings', async () => {
    const env = await setup();
    const server = env.makeServer();
    await server.start();
    const c = client(env.socketPath, env.token, { reconnect: false });
    await c.start();
    expect(server.sessions.size).toBe(1);
    // Freeze the client's socket: pongs stop, the server's heartbeat must notice within interval + timeout.
    const ws = (c as unknown as { ws: { _socket: { pause(): void } } }).ws;
    ws._socket.pause();
    await waitUntil(() => server.sessions.size === 0, 2000);
  });

  it('listens on loopback TCP too', async () => {
    const env = await setup();
    const server = new LinkServer<UpMsg, DownMsg>({ tenant: 'acme', token: env.token, listen: { port: 0 }, inbound: Up, outbound: Down, onMessage: (_s, m) => void (m.type === 'set' && env.applied.set(m.key, m.value)) });
    cleanups.push(() => server.close());
    const ep = await server.start();
    expect('port' in ep && ep.port > 0).toBe(true);
    const c = new LinkClient<DownMsg, UpMsg>({ endpoint: ep, tenant: 'acme', token: env.token, role: 'mount', inbound: Down, outbound: Up, reconnect: false, onMessage: () => undefined });
    cleanups.push(() => c.close());
    await c.start();
    c.send({ type: 'set', key: 'tcp', value: 3 });
    await waitUntil(() => env.applied.get('tcp') === 3, 2000);
  });
});

describe('a link hosted by an HTTP server (the controller\'s agent link)', () => {
  /** An HTTP server that hands the upgrades of /hosted to a LinkHost and refuses every other path. */
  async function hosted(options: Partial<LinkHostOptions<UpMsg, DownMsg>> & { token: string | null }) {
    const applied = new Map<string, number>();
    const host = new LinkHost<UpMsg, DownMsg>({
      tenant: 'agents',
      inbound: Up,
      outbound: Down,
      onMessage: (s, m) => {
        if (m.type === 'set') {
          applied.set(m.key, m.value);
          s.send({ type: 'ack', key: m.key });
        }
      },
      ...options,
    });
    const http: Server = createServer((_req, res) => res.writeHead(404).end());
    http.on('upgrade', (req, socket: Socket, head: Buffer) => {
      if (req.url === '/hosted') host.handleUpgrade(req, socket, head);
      else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      await host.close();
      http.closeAllConnections();
      await new Promise((r) => http.close(r));
    });
    const url = `ws://127.0.0.1:${(http.address() as { port: number }).port}/hosted`;
    return { host, applied, url };
  }

  function peer(url: string, token: string | undefined, extra: Partial<LinkClientOptions<DownMsg, UpMsg>> = {}) {
    const c = new LinkClient<DownMsg, UpMsg>({
      endpoint: { url },
      tenant: 'agents',
      ...(token === undefined ? {} : { token }),
      role: 'agent',
      inbound: Down,
      outbound: Up,
      reconnect: false,
      connectTimeoutMs: 2000,
      onMessage: () => undefined,
      ...extra,
    });
    cleanups.push(() => c.close());
    return c;
  }

  it('serves a ws:// URL on its owner\'s server; a token host refuses a hello without one, an open host (token null) admits it', async () => {
    const guarded = await hosted({ token: 'a'.repeat(64) });
    const ok = peer(guarded.url, 'a'.repeat(64));
    await ok.start();
    const ack = ok.waitFor((m) => m.type === 'ack', 2000);
    ok.send({ type: 'set', key: 'k', value: 1 });
    await ack;
    expect([...guarded.applied]).toEqual([['k', 1]]);
    const bare = await peer(guarded.url, undefined).start().catch((e: unknown) => e);
    expect(isLinkError(bare, 'E_AUTH')).toBe(true);
    expect((bare as Error).message).toMatch(/needs a token/);
    const open = await hosted({ token: null });
    await peer(open.url, undefined).start();
    expect(open.host.sessions.size).toBe(1);
    // A path its owner does not route is not the link's.
    const elsewhere = await peer(open.url.replace('/hosted', '/other'), undefined).start().catch((e: unknown) => e);
    expect(isLinkError(elsewhere, 'E_NOT_CONNECTED')).toBe(true);
  });

  it('a refused peer stops retrying unless retryRefused, and then retries with the backoff', async () => {
    const { url } = await hosted({ token: 'a'.repeat(64) });
    let once = 0;
    let again = 0;
    const stops = peer(url, 'b'.repeat(64), { reconnect: { initialDelayMs: 20, maxDelayMs: 40 }, onRefused: () => void once++ });
    const retries = peer(url, 'b'.repeat(64), { reconnect: { initialDelayMs: 20, maxDelayMs: 40 }, retryRefused: true, onRefused: () => void again++ });
    await Promise.all([stops.start().catch(() => undefined), retries.start().catch(() => undefined)]);
    await new Promise((r) => setTimeout(r, 400));
    expect(once).toBe(1);
    expect(again).toBeGreaterThanOrEqual(4);
    expect(again).toBeLessThan(25);
  });

  it("heartbeat 'server' pings on the interval the welcome announces", async () => {
    const { host, url } = await hosted({ token: null, heartbeat: { intervalMs: 50, timeoutMs: 1000 } });
    const c = peer(url, undefined, { heartbeat: 'server' });
    await c.start();
    const session = [...host.sessions][0]!;
    let pings = 0;
    (session as unknown as { ws: { on(e: 'ping', f: () => void): void } }).ws.on('ping', () => void pings++);
    await new Promise((r) => setTimeout(r, 400));
    // Its own default would be one ping per 5 s.
    expect(pings).toBeGreaterThanOrEqual(4);
  });

  it('takes frames up to its maxFrameBytes; the default limit closes the link on them', async () => {
    const big = 'k'.repeat(1536 * 1024);
    const roomy = await hosted({ token: null, maxFrameBytes: 2 * 1024 * 1024 });
    const c = peer(roomy.url, undefined, { maxFrameBytes: 2 * 1024 * 1024 });
    await c.start();
    const ack = c.waitFor((m) => m.type === 'ack', 5000);
    c.send({ type: 'set', key: big, value: 2 });
    await ack;
    expect(roomy.applied.get(big)).toBe(2);
    const tight = await hosted({ token: null });
    let dropped = false;
    const d = peer(tight.url, undefined, { onDisconnect: () => void (dropped = true) });
    await d.start();
    d.send({ type: 'set', key: big, value: 2 });
    await waitUntil(() => dropped, 2000);
    expect(tight.applied.size).toBe(0);
  });
});

describe('decoder fuzz', () => {
  it('never throws and accepts only schema-valid messages', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.jsonValue().map((v) => JSON.stringify(v)), fc.record({ type: fc.constantFrom('usage', 'alarm', 'shrink-ready', 'stats', 'status', 'x'), containerId: fc.oneof(fc.string(), fc.integer()), usageBytes: fc.oneof(fc.integer(), fc.double()), memoryBytes: fc.integer(), diskBytes: fc.nat(), limitBytes: fc.nat() }, { requiredKeys: ['type'] }).map((o) => JSON.stringify(o))), (frame) => {
        const d = decodeMessage(ToManager, frame);
        if (d.ok) {
          expect(ToManager.schema.safeParse(JSON.parse(frame)).success).toBe(true);
        } else {
          expect(['E_BAD_MESSAGE', 'E_UNKNOWN_MESSAGE']).toContain(d.code);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
