import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import pino from 'pino';
import { NodeAgent } from '../../agent/index';
import { DockerTaskExecutor } from '../../node/index';
import { Controller, OPERATOR_TOKEN_NAME, type ControllerOptions, type TaskRecord } from '../../controller/index';
import type { Engine } from '../../engine/index';
import { readTenantToken } from '../../link/index';

/** Test timings: fast heartbeats so failures are seen within about a second. */
export const HEARTBEAT_MS = 200;
export const NODE_TIMEOUT_MS = 1000;
export const quiet = pino({ level: process.env.EPHEMERA_LOG_LEVEL ?? 'silent' });

/** The credentials `api` sends to each controller a test started: a token of tenant `default`, and the operator's. */
const credentialsByUrl = new Map<string, { tenant: string; operator: string }>();

export async function startController(stateDir: string, extra: Partial<ControllerOptions> = {}): Promise<Controller> {
  const ctl = await Controller.start({ stateDir, port: 0, heartbeatMs: HEARTBEAT_MS, nodeTimeoutMs: NODE_TIMEOUT_MS, logger: quiet, ...extra });
  const operator = extra.operatorToken ?? (await readTenantToken(stateDir, OPERATOR_TOKEN_NAME));
  const tenant = (await ctl.credentials.issue('default', 'test harness')).token;
  credentialsByUrl.set(ctl.url, { tenant, operator });
  return ctl;
}

/** Whose credential a request carries: the default tenant's, the operator's, none, or a given token. */
export type As = 'tenant' | 'operator' | 'none' | { token: string };

export function startAgent(engine: Engine, url: string, name: string, limitMiB: number, labels: Record<string, string>): Promise<NodeAgent> {
  return NodeAgent.start({
    controllerUrl: url,
    name,
    limitBytes: limitMiB * 1024 * 1024,
    executor: new DockerTaskExecutor(engine, name, labels),
    reconnectMinMs: 100,
    reconnectMaxMs: 400,
    logger: quiet,
  });
}

/** A node agent in its own process (vite-node runs the TypeScript), so a test can SIGKILL it. */
export async function spawnAgentProcess(url: string, name: string, limitMiB: number, label: [string, string]): Promise<ChildProcess> {
  const root = path.join(__dirname, '..', '..');
  const child = spawn(path.join(root, 'node_modules', '.bin', 'vite-node'), [path.join(__dirname, 'agent-child.ts'), '--', url, name, String(limitMiB), `${label[0]}=${label[1]}`], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, EPHEMERA_LOG_LEVEL: 'warn' },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent process ${name} did not register within 30 s: ${stderr}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('registered')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agent process ${name} exited (${code}): ${stderr}`));
    });
  });
  return child;
}

export function tokenFor(url: string, as: As): string | undefined {
  if (as === 'none') return undefined;
  if (typeof as === 'object') return as.token;
  const known = credentialsByUrl.get(url);
  if (!known) throw new Error(`no credentials for ${url}: start it with startController`);
  return known[as];
}

/** One API request; as tenant `default` of that controller unless `as` says otherwise. */
export async function api(url: string, method: string, route: string, body?: unknown, as: As = 'tenant'): Promise<{ status: number; body: any }> {
  const token = tokenFor(url, as);
  const res = await fetch(`${url}${route}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // metrics are text
  }
  return { status: res.status, body: parsed };
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Polls `GET /tasks/:id` until the task is no longer running. */
export function waitForTask(url: string, taskId: string, timeoutMs = 60_000, as: As = 'tenant'): Promise<TaskRecord> {
  return waitFor(`task ${taskId}`, async () => {
    const { status, body } = await api(url, 'GET', `/tasks/${taskId}`, undefined, as);
    return status === 200 && body.status !== 'running' ? (body as TaskRecord) : undefined;
  }, timeoutMs, 100);
}
