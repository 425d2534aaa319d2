import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { NodeAgent, type TaskExecutor } from '../../agent/index';
import { buildProgram } from '../../cli/main';
import { Controller, EXTENDER_TOKEN_NAME, isControllerError, resolveToken, TenantCredentials } from '../../controller/index';
import { readTenantToken } from '../../link/index';
import { api, quiet, startController, tokenFor, waitForTask } from './harness';

/** Runs every invocation at once, except `hold`, which runs until the agent closes (or `release`). */
class FakeExecutor implements TaskExecutor {
  private readonly held = new Set<() => void>();
  async run(task: { taskId: string }, fn: { tenant: string; function: string }, args: string[]) {
    if (args[0] === 'hold') await new Promise<void>((resolve) => this.held.add(resolve));
    return { exitCode: 0, stdout: `ran ${fn.tenant}/${fn.function} ${args.join(' ')}`, stderr: '', execMs: 1, startMs: 1, oomKills: 0 };
  }
  release(): void {
    for (const r of this.held) r();
    this.held.clear();
  }
  profile = () => Promise.reject(new Error('not used: profiles are declared'));
  recover = async () => 0;
  close = async () => this.release();
}

const PROFILE = { peakMemoryBytes: 1 << 20, largestFileBytes: 1 << 20 };
const fnBody = (name: string, image: string, memoryMiB = 16) => ({ name, image, command: ['run'], memoryMiB, profile: PROFILE });

describe('authenticated API: tenants bound to their credentials', () => {
  let ctl: Controller;
  let stateDir: string;
  let agent: NodeAgent;
  const executor = new FakeExecutor();
  /** Every line the controller logged, as pino wrote it. */
  const lines: string[] = [];
  let alice: { token: string; id: string };
  let bob: { token: string; id: string };
  let bobTask: string;
  const A = () => ({ token: alice.token });
  const B = () => ({ token: bob.token });

  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-auth-'));
    const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    ctl = await startController(stateDir, { logger, agentToken: 'c'.repeat(64) });
    for (const [tenant, set] of [
      ['alice', (t: { token: string; id: string }) => (alice = t)],
      ['bob', (t: { token: string; id: string }) => (bob = t)],
    ] as const) {
      const res = await api(ctl.url, 'POST', '/tokens', { tenant, label: 'test' }, 'operator');
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.token).toMatch(/^ept_[0-9a-f]{16}_[0-9a-f]{64}$/);
      set(res.body);
    }
    agent = await NodeAgent.start({ controllerUrl: ctl.url, name: 'n1', limitBytes: 4096 * 1048576, executor, token: 'c'.repeat(64), recoverOnStart: false, logger: quiet });
    await agent.registered();
    // Bob's function and one finished task with its arguments and output.
    expect((await api(ctl.url, 'POST', '/functions', fnBody('f', 'bob-image'), B())).status).toBe(201);
    expect((await api(ctl.url, 'POST', '/functions', fnBody('bob-only', 'bob-image'), B())).status).toBe(201);
    const run = await api(ctl.url, 'POST', '/functions/f/invoke', { args: ['bob-secret-arg'] }, B());
    expect(run.status, JSON.stringify(run.body)).toBe(200);
    expect(run.body.outcome.stdout).toBe('ran bob/f bob-secret-arg');
    bobTask = run.body.taskId;
  });

  afterAll(async () => {
    await agent?.close();
    await ctl?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  /** Bob's view of his function, to show nothing Alice did changed it. */
  const bobsF = async () => (await api(ctl.url, 'GET', '/functions/f', undefined, B())).body;

  it('every route but /healthz answers 401 without a credential, with a wrong one, or a malformed header; /healthz says only ok', async () => {
    const routes: [string, string, unknown?][] = [
      ['GET', '/nodes'],
      ['GET', '/metrics'],
      ['GET', '/functions'],
      ['POST', '/functions', fnBody('x', 'anon')],
      ['GET', '/functions/f?tenant=bob'],
      ['DELETE', '/functions/f?tenant=bob'],
      ['POST', '/functions/f/invoke', { tenant: 'bob' }],
      ['GET', '/tasks'],
      ['GET', `/tasks/${bobTask}`],
      ['GET', '/tokens'],
      ['POST', '/tokens', { tenant: 'mallory' }],
      ['DELETE', `/tokens/${bob.id}`],
      ['GET', '/tenants/bob/limits'],
      ['PUT', '/tenants/bob/limits', {}],
      ['GET', '/no/such/route'],
      ['POST', '/scheduler/filter', {}],
      ['POST', '/scheduler/prioritize', {}],
    ];
    const wrong = { token: `ept_${bob.id}_${'0'.repeat(64)}` };
    for (const [method, route, body] of routes) {
      for (const as of ['none', wrong, { token: 'c'.repeat(64) }] as const) {
        const res = await api(ctl.url, method, route, body, as);
        expect(res.status, `${method} ${route} as ${JSON.stringify(as)}`).toBe(401);
        expect(res.body.code).toBe('E_UNAUTHORIZED');
      }
    }
    const basic = await fetch(`${ctl.url}/nodes`, { headers: { authorization: `Basic ${bob.token}` } });
    expect(basic.status).toBe(401);
    expect(basic.headers.get('www-authenticate')).toBe('Bearer');
    const health = await api(ctl.url, 'GET', '/healthz', undefined, 'none');
    expect(health).toEqual({ status: 200, body: { ok: true } });
    expect(await bobsF()).toMatchObject({ tenant: 'bob', image: 'bob-image' });
  });

  it('the hijack of the issue: a deploy naming tenant bob with replace is 403 (anonymous: 401), and bob\'s function is untouched', async () => {
    const before = await bobsF();
    const hijack = { ...fnBody('f', 'evil'), tenant: 'bob', replace: true };
    expect((await api(ctl.url, 'POST', '/functions', hijack, 'none')).status).toBe(401);
    const res = await api(ctl.url, 'POST', '/functions', hijack, A());
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('E_FORBIDDEN');
    expect(await bobsF()).toEqual(before);
    // Without naming a tenant, the same body deploys alice/f: the credential decides.
    const own = await api(ctl.url, 'POST', '/functions', { ...fnBody('f', 'alice-image'), replace: true }, A());
    expect(own.status).toBe(201);
    expect(own.body).toMatchObject({ tenant: 'alice', name: 'f', image: 'alice-image' });
    expect(await bobsF()).toEqual(before);
  });

  it("alice's token cannot list, read, invoke, replace or delete bob's function or task: 403 (or her own namespace's 404), naming nothing of bob's", async () => {
    const before = await bobsF();
    const tasksBefore = (await api(ctl.url, 'GET', '/tasks', undefined, B())).body.tasks;
    const attempts: [string, string, unknown?][] = [
      ['GET', '/functions?tenant=bob'],
      ['GET', '/functions/f?tenant=bob'],
      ['GET', '/functions/bob-only?tenant=bob'],
      ['DELETE', '/functions/f?tenant=bob'],
      ['DELETE', '/functions/bob-only?tenant=bob'],
      ['POST', '/functions/f/invoke', { tenant: 'bob', args: ['x'] }],
      ['POST', '/functions/bob-only/invoke', { tenant: 'bob' }],
      ['POST', '/functions', { ...fnBody('bob-only', 'evil'), tenant: 'bob', replace: true }],
      ['GET', '/tasks?tenant=bob'],
      ['GET', `/tasks/${bobTask}`],
      ['GET', '/tenants/bob/limits'],
      ['GET', '/nodes'],
      ['GET', '/metrics'],
      ['GET', '/tokens'],
      ['POST', '/tokens', { tenant: 'bob' }],
      ['DELETE', `/tokens/${bob.id}`],
      ['PUT', '/tenants/alice/limits', {}],
    ];
    for (const [method, route, body] of attempts) {
      const res = await api(ctl.url, method, route, body, A());
      expect(res.status, `${method} ${route}: ${JSON.stringify(res.body)}`).toBe(403);
      expect(res.body.code).toBe('E_FORBIDDEN');
      expect(JSON.stringify(res.body)).not.toMatch(/bob-image|bob-secret-arg|bob-only|ran bob/);
    }
    // In her own namespace bob's names do not exist: the same 404 as any unknown name.
    for (const [method, route] of [
      ['GET', '/functions/bob-only'],
      ['DELETE', '/functions/bob-only'],
      ['POST', '/functions/bob-only/invoke'],
    ] as const) {
      const res = await api(ctl.url, method, route, method === 'POST' ? {} : undefined, A());
      expect(res.status).toBe(404);
      expect(res.body.message).toMatch(/alice\/bob-only/);
      expect(res.body.message).not.toMatch(/bob\//);
    }
    // Her lists hold only her own.
    expect((await api(ctl.url, 'GET', '/functions', undefined, A())).body.functions.map((f: { tenant: string }) => f.tenant)).toEqual(['alice']);
    expect((await api(ctl.url, 'GET', '/tasks', undefined, A())).body.tasks).toEqual([]);
    // Bob's data is untouched.
    expect(await bobsF()).toEqual(before);
    expect((await api(ctl.url, 'GET', '/functions/bob-only', undefined, B())).body.image).toBe('bob-image');
    expect((await api(ctl.url, 'GET', '/tasks', undefined, B())).body.tasks).toEqual(tasksBefore);
    expect((await api(ctl.url, 'GET', `/tasks/${bobTask}`, undefined, B())).body.args).toEqual(['bob-secret-arg']);
  });

  it('the operator sees all: nodes, every tenant\'s functions and tasks, tokens; it deploys and invokes for no one', async () => {
    const nodes = await api(ctl.url, 'GET', '/nodes', undefined, 'operator');
    expect(nodes.body.nodes.map((n: { name: string }) => n.name)).toEqual(['n1']);
    const fns = (await api(ctl.url, 'GET', '/functions', undefined, 'operator')).body.functions.map((f: { tenant: string; name: string }) => `${f.tenant}/${f.name}`);
    expect(fns).toEqual(expect.arrayContaining(['alice/f', 'bob/f', 'bob/bob-only']));
    expect((await api(ctl.url, 'GET', '/functions?tenant=bob', undefined, 'operator')).body.functions).toHaveLength(2);
    expect((await api(ctl.url, 'GET', '/functions/f?tenant=bob', undefined, 'operator')).body.image).toBe('bob-image');
    expect((await api(ctl.url, 'GET', '/functions/f', undefined, 'operator')).status).toBe(400);
    expect((await api(ctl.url, 'GET', `/tasks/${bobTask}`, undefined, 'operator')).body).toMatchObject({ tenant: 'bob', args: ['bob-secret-arg'] });
    expect((await api(ctl.url, 'GET', '/tasks', undefined, 'operator')).body.tasks.map((t: { taskId: string }) => t.taskId)).toContain(bobTask);
    const tokens = (await api(ctl.url, 'GET', '/tokens', undefined, 'operator')).body.tokens;
    expect(tokens.map((t: { tenant: string }) => t.tenant)).toEqual(expect.arrayContaining(['alice', 'bob', 'default']));
    expect(JSON.stringify(tokens)).not.toMatch(/sha256|ept_/);
    expect((await api(ctl.url, 'GET', '/metrics', undefined, 'operator')).body).toMatch(/ephemera_invocations_total\{tenant="bob",function="f",outcome="succeeded"\} 1/);
    expect((await api(ctl.url, 'POST', '/functions', fnBody('op', 'x'), 'operator')).status).toBe(403);
    expect((await api(ctl.url, 'POST', '/functions/f/invoke', { tenant: 'bob' }, 'operator')).status).toBe(403);
  });

  it('tokens are kept hashed in a 0600 file; a token revoked while the controller runs is refused from the next request on', async () => {
    const file = path.join(stateDir, 'tenants.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const text = await readFile(file, 'utf8');
    expect(text).not.toContain(alice.token.split('_')[2]);
    expect(text).not.toContain(bob.token.split('_')[2]);
    const issued = (await api(ctl.url, 'POST', '/tokens', { tenant: 'alice', label: 'short-lived' }, 'operator')).body;
    const mine = { token: issued.token as string };
    expect((await api(ctl.url, 'GET', '/functions', undefined, mine)).status).toBe(200);
    const revoked = await api(ctl.url, 'DELETE', `/tokens/${issued.id}`, undefined, 'operator');
    expect(revoked).toEqual({ status: 200, body: { revoked: issued.id } });
    const after = await api(ctl.url, 'GET', '/functions', undefined, mine);
    expect(after.status).toBe(401);
    expect((await api(ctl.url, 'DELETE', `/tokens/${issued.id}`, undefined, 'operator')).status).toBe(404);
    // Alice's other token still works; a restarted controller would read the same file.
    expect((await api(ctl.url, 'GET', '/functions', undefined, A())).status).toBe(200);
    expect(JSON.parse(await readFile(file, 'utf8')).tokens.map((t: { id: string }) => t.id)).not.toContain(issued.id);
  });

  it('DELETE /functions/:name removes the owner\'s function, and the operator may remove any', async () => {
    expect((await api(ctl.url, 'POST', '/functions', fnBody('gone', 'x'), A())).status).toBe(201);
    const del = await api(ctl.url, 'DELETE', '/functions/gone', undefined, A());
    expect(del.status).toBe(200);
    expect(del.body).toMatchObject({ tenant: 'alice', name: 'gone' });
    expect((await api(ctl.url, 'GET', '/functions/gone', undefined, A())).status).toBe(404);
    expect((await api(ctl.url, 'DELETE', '/functions/gone', undefined, A())).status).toBe(404);
    expect((await api(ctl.url, 'POST', '/functions', fnBody('gone', 'x'), A())).status).toBe(201);
    expect((await api(ctl.url, 'DELETE', '/functions/gone?tenant=alice', undefined, 'operator')).status).toBe(200);
    const onDisk = JSON.parse(await readFile(path.join(stateDir, 'functions.json'), 'utf8')).functions.map((f: { tenant: string; name: string }) => `${f.tenant}/${f.name}`);
    expect(onDisk).not.toContain('alice/gone');
  });

  it('per-tenant limits the operator sets (functions, concurrent invocations, memory) are refused with 429 E_LIMIT saying which', async () => {
    const set = await api(ctl.url, 'PUT', '/tenants/carol/limits', { functions: 2, concurrentInvocations: 2, memoryMiB: 48 }, 'operator');
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect((await api(ctl.url, 'PUT', '/tenants/carol/limits', { functions: -1, cpu: 3 }, 'operator')).status).toBe(400);
    const carol = { token: (await api(ctl.url, 'POST', '/tokens', { tenant: 'carol' }, 'operator')).body.token as string };
    expect((await api(ctl.url, 'POST', '/functions', fnBody('big', 'x', 64), carol)).body).toMatchObject({ code: 'E_LIMIT', message: expect.stringMatching(/memory limit of 48 MiB/) });
    expect((await api(ctl.url, 'POST', '/functions', fnBody('a', 'x', 16), carol)).status).toBe(201);
    expect((await api(ctl.url, 'POST', '/functions', fnBody('b', 'x', 32), carol)).status).toBe(201);
    const third = await api(ctl.url, 'POST', '/functions', fnBody('c', 'x', 16), carol);
    expect(third.status).toBe(429);
    expect(third.body).toMatchObject({ code: 'E_LIMIT', message: expect.stringMatching(/2 function\(s\) deployed; its limit is 2/) });
    // Replacing one of the two is not a third.
    expect((await api(ctl.url, 'POST', '/functions', { ...fnBody('a', 'y', 16), replace: true }, carol)).status).toBe(201);
    const first = await api(ctl.url, 'POST', '/functions/a/invoke', { args: ['hold'], wait: false }, carol);
    expect(first.status).toBe(202);
    // 16 running + 32 = 48: fits; then the memory (16 + 32 + 16 > 48) and the count (2) are both full.
    const second = await api(ctl.url, 'POST', '/functions/b/invoke', { args: ['hold'], wait: false }, carol);
    expect(second.status).toBe(202);
    const over = await api(ctl.url, 'POST', '/functions/a/invoke', { args: ['hold'], wait: false }, carol);
    expect(over.status).toBe(429);
    expect(over.body.message).toMatch(/2 invocation\(s\) running; its limit of concurrent invocations is 2/);
    await api(ctl.url, 'PUT', '/tenants/carol/limits', { concurrentInvocations: 10, memoryMiB: 48 }, 'operator');
    const memory = await api(ctl.url, 'POST', '/functions/a/invoke', { args: ['hold'], wait: false }, carol);
    expect(memory.status).toBe(429);
    expect(memory.body.message).toMatch(/hold 48 MiB and this one needs 16 MiB more; its memory limit is 48 MiB/);
    // Other tenants are not limited by carol's limits.
    expect((await api(ctl.url, 'POST', '/functions/f/invoke', { args: ['x'] }, A())).status).toBe(200);
    const shown = await api(ctl.url, 'GET', '/tenants/carol/limits', undefined, carol);
    expect(shown.body).toEqual({ tenant: 'carol', limits: { concurrentInvocations: 10, memoryMiB: 48 }, usage: { functions: 2, concurrentInvocations: 2, memoryMiB: 48 } });
    executor.release();
    await waitForTask(ctl.url, first.body.taskId, 10_000, carol);
    await waitForTask(ctl.url, second.body.taskId, 10_000, carol);
    expect((await api(ctl.url, 'POST', '/functions/a/invoke', { args: ['now'] }, carol)).status).toBe(200);
  });

  it('the CLI takes its token from --token-file or EPHEMERA_TOKEN: token create, list, revoke; limits; status', async () => {
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (out.push(String(chunk)), true));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-cli-'));
    const run = (...args: string[]) => buildProgram().exitOverride().parseAsync(['node', 'ephemera', 'controller', ...args, '--url', ctl.url]);
    try {
      const opFile = path.join(dir, 'operator.token');
      await writeFile(opFile, `${tokenFor(ctl.url, 'operator')}\n`, { mode: 0o600 });
      await run('token', 'create', '--tenant', 'dave', '--label', 'cli', '--out', path.join(dir, 'dave.token'), '--token-file', opFile);
      const dave = (await readFile(path.join(dir, 'dave.token'), 'utf8')).trim();
      expect((await stat(path.join(dir, 'dave.token'))).mode & 0o777).toBe(0o600);
      expect((await api(ctl.url, 'GET', '/functions', undefined, { token: dave })).status).toBe(200);
      vi.stubEnv('EPHEMERA_TOKEN', tokenFor(ctl.url, 'operator')!);
      out.length = 0;
      await run('status', '--json');
      expect(JSON.parse(out.join('')).nodes[0].name).toBe('n1');
      out.length = 0;
      await run('token', 'list', '--tenant', 'dave');
      const id = /^([0-9a-f]{16})\s+dave\s/m.exec(out.join(''))![1]!;
      expect(out.join('')).not.toContain(dave);
      await run('limits', 'set', 'dave', '--functions', '1');
      expect((await api(ctl.url, 'GET', '/tenants/dave/limits', undefined, 'operator')).body.limits).toEqual({ functions: 1 });
      await run('token', 'revoke', id);
      expect((await api(ctl.url, 'GET', '/functions', undefined, { token: dave })).status).toBe(401);
      vi.stubEnv('EPHEMERA_TOKEN', dave);
      const refused = await run('status').catch((e: unknown) => e);
      expect(isControllerError(refused, 'E_UNAUTHORIZED')).toBe(true);
      // A token file others may read is refused rather than used.
      await writeFile(path.join(dir, 'open.token'), 'x\n', { mode: 0o644 });
      expect(isControllerError(await resolveToken({ tokenFile: path.join(dir, 'open.token') }).catch((e: unknown) => e), 'E_BAD_ARGS')).toBe(true);
    } finally {
      spy.mockRestore();
      vi.unstubAllEnvs();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('an audit line per changing request (who, what, result), and no token or secret in any log line', async () => {
    const audits = lines.map((l) => JSON.parse(l) as { msg: string; audit?: { who: string; action: string; target?: string; status: number; code?: string } }).filter((l) => l.msg === 'audit').map((l) => l.audit!);
    // Bob's first deploy, the hijack refused, alice's revoked token, carol's limit refusal: each has its line.
    expect(audits).toContainEqual({ who: `tenant:bob token:${bob.id}`, action: 'POST /functions', target: 'bob/f', status: 201 });
    expect(audits).toContainEqual({ who: `tenant:alice token:${alice.id}`, action: 'POST /functions', target: 'alice/f', status: 403, code: 'E_FORBIDDEN' });
    expect(audits).toContainEqual({ who: 'anonymous', action: 'POST /functions', status: 401, code: 'E_UNAUTHORIZED' });
    expect(audits).toContainEqual(expect.objectContaining({ who: 'operator', action: 'DELETE /tokens/:id', status: 200 }));
    expect(audits).toContainEqual(expect.objectContaining({ action: 'POST /functions/:name/invoke', status: 429, code: 'E_LIMIT' }));
    expect(audits).toContainEqual(expect.objectContaining({ who: 'operator', action: 'PUT /tenants/:tenant/limits', target: 'tenant:carol', status: 200 }));
    expect(audits.filter((a) => a.action === 'POST /tokens' && a.status === 201).length).toBeGreaterThanOrEqual(4);
    // Reads are not audited.
    expect(audits.some((a) => a.action.startsWith('GET'))).toBe(false);
    const log = lines.join('');
    const secrets = [
      alice.token,
      bob.token,
      alice.token.split('_')[2]!,
      bob.token.split('_')[2]!,
      tokenFor(ctl.url, 'operator')!,
      tokenFor(ctl.url, 'tenant')!,
      await readTenantToken(stateDir, EXTENDER_TOKEN_NAME),
      'c'.repeat(64),
    ];
    for (const s of secrets) expect(log).not.toContain(s);
    expect(log).not.toMatch(/ept_[0-9a-f]{16}_/);
  });
});

describe('tenant credentials on disk', () => {
  it('tokens (hashed) and limits survive a restart; a revoked one stays revoked; a tenants.json others may read is refused', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-cred-'));
    try {
      const first = await TenantCredentials.open(dir);
      const kept = await first.issue('t1');
      const gone = await first.issue('t1');
      await first.revoke(gone.id);
      await first.setLimits('t1', { functions: 3 });
      const again = await TenantCredentials.open(dir);
      expect(again.authenticate(kept.token)).toEqual({ tenant: 't1', tokenId: kept.id });
      expect(again.authenticate(gone.token)).toBeUndefined();
      // Same id, another secret: refused.
      expect(again.authenticate(kept.token.replace(/.$/, (c) => (c === '0' ? '1' : '0')))).toBeUndefined();
      expect(again.limits('t1')).toEqual({ functions: 3 });
      await chmod(path.join(dir, 'tenants.json'), 0o644);
      expect(isControllerError(await TenantCredentials.open(dir).catch((e: unknown) => e), 'E_STATE')).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'ignore' });
}

/** GET over HTTPS trusting `ca`, optionally presenting a client certificate. */
function httpsCall(url: string, opts: { ca: Buffer; method?: string; body?: string; headers?: Record<string, string>; cert?: Buffer; key?: Buffer }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: opts.method ?? 'GET', ca: opts.ca, headers: opts.headers ?? {}, ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('listening beyond loopback', () => {
  let dir: string;
  let ca: Buffer;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'eph-ctl-tls-'));
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'];
    // A CA that signs the server's certificate and kube-scheduler's client certificate.
    openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=ephemera-test-ca'], dir);
    openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir);
    await writeFile(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'server.ext'], dir);
    openssl(['req', ...ec, '-keyout', 'scheduler.key', '-out', 'scheduler.csr', '-subj', '/CN=kube-scheduler'], dir);
    openssl(['x509', '-req', '-in', 'scheduler.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'scheduler.pem', '-days', '1'], dir);
    ca = await readFile(path.join(dir, 'ca.pem'));
  }, 60_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a non-loopback address without TLS is refused with a reason; --behind-tls-proxy accepts it', async () => {
    for (const host of ['0.0.0.0', '::', 'controller.example']) {
      const err = await Controller.start({ stateDir: dir, host, port: 0, logger: quiet }).catch((e: unknown) => e);
      expect(isControllerError(err, 'E_BAD_ARGS'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/without TLS.*--tls-cert.*--behind-tls-proxy/s);
    }
    const proxied = await Controller.start({ stateDir: dir, host: '0.0.0.0', port: 0, logger: quiet, behindTlsProxy: true });
    try {
      expect(proxied.url).toMatch(/^http:/);
      expect((await fetch(`http://127.0.0.1:${proxied.address.port}/nodes`)).status).toBe(401);
    } finally {
      await proxied.close();
    }
  });

  it('with a certificate it serves HTTPS beyond loopback; the extender takes the scheduler\'s client certificate', async () => {
    const ctl = await Controller.start({
      stateDir: dir,
      host: '0.0.0.0',
      port: 0,
      logger: quiet,
      tls: { certFile: path.join(dir, 'server.pem'), keyFile: path.join(dir, 'server.key'), clientCaFile: path.join(dir, 'ca.pem') },
    });
    try {
      expect(ctl.url).toMatch(/^https:/);
      const base = `https://127.0.0.1:${ctl.address.port}`;
      const operator = await readTenantToken(dir, 'operator');
      expect((await httpsCall(`${base}/nodes`, { ca })).status).toBe(401);
      const nodes = await httpsCall(`${base}/nodes`, { ca, headers: { authorization: `Bearer ${operator}` } });
      expect(nodes.status).toBe(200);
      expect(JSON.parse(nodes.body).nodes).toEqual([]);
      // Plain HTTP on the TLS port gets nothing.
      expect(await fetch(`http://127.0.0.1:${ctl.address.port}/healthz`).then((r) => r.status).catch(() => 'refused')).not.toBe(200);
      const args = JSON.stringify({ Pod: { metadata: { name: 'p' }, spec: { containers: [] } }, Nodes: null, NodeNames: ['a'] });
      const cert = await readFile(path.join(dir, 'scheduler.pem'));
      const key = await readFile(path.join(dir, 'scheduler.key'));
      expect((await httpsCall(`${base}/scheduler/filter`, { ca, method: 'POST', body: args })).status).toBe(401);
      const filtered = await httpsCall(`${base}/scheduler/filter`, { ca, method: 'POST', body: args, cert, key });
      expect(filtered.status, filtered.body).toBe(200);
      expect(JSON.parse(filtered.body).NodeNames).toEqual(['a']);
      // The certificate opens the extender only, not the tenants' API.
      expect((await httpsCall(`${base}/functions`, { ca, cert, key })).status).toBe(401);
    } finally {
      await ctl.close();
    }
  });
});
