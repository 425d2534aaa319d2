import { readFile, stat } from 'node:fs/promises';
import { isCode } from '../errors/index';
import { CONTROLLER_ERROR_CODES, ControllerError, errorMessage } from './errors';

/**
 * The controller's HTTP API with a bearer token, for the CLI and the bench suites. A controller with a
 * private CA is trusted through NODE_EXTRA_CA_CERTS (fetch takes no per-call CA).
 */
export class ControllerClient {
  readonly url: string;
  // A private field: the token stays out of util.inspect and JSON.stringify of the client.
  readonly #token: string | undefined;
  private readonly timeoutMs: number;

  constructor(url: string, token: string | undefined, timeoutMs = 300_000) {
    this.url = url.replace(/\/+$/, '');
    this.#token = token;
    this.timeoutMs = timeoutMs;
  }

  /** The answer as it came, whatever the status. */
  async request(method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = {};
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(`${this.url}${route}`, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new ControllerError('E_NO_NODES', `cannot reach the controller at ${this.url}: ${errorMessage(err)}`);
    }
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // /metrics is text
    }
    return { status: res.status, body: parsed };
  }

  /** The body of a 2xx answer; otherwise the controller's own error (code and message). */
  async call<T>(method: string, route: string, body?: unknown): Promise<T> {
    const res = await this.request(method, route, body);
    if (res.status >= 200 && res.status < 300) return res.body as T;
    const b = (typeof res.body === 'object' && res.body !== null ? res.body : {}) as { code?: string; message?: string };
    const code = isCode(CONTROLLER_ERROR_CODES, b.code) ? b.code : 'E_EXECUTION';
    throw new ControllerError(code, `${method} ${route} answered ${res.status}: ${b.message ?? JSON.stringify(res.body)}`);
  }
}

async function readTokenFile(file: string): Promise<string> {
  let text: string;
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) throw new ControllerError('E_BAD_ARGS', `token file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof ControllerError) throw err;
    throw new ControllerError('E_BAD_ARGS', `cannot read the token file ${file}: ${errorMessage(err)}`);
  }
  const token = text.trim();
  if (token === '') throw new ControllerError('E_BAD_ARGS', `token file ${file} is empty`);
  return token;
}

/**
 * A CLI command's token: `--token-file`, else `$EPHEMERA_TOKEN`, else `$EPHEMERA_TOKEN_FILE`, else
 * `fallbackFile` (the local controller's operator token) if it exists; undefined when none is there.
 */
export async function resolveToken(opts: { tokenFile?: string; fallbackFile?: string; env?: NodeJS.ProcessEnv }): Promise<string | undefined> {
  const env = opts.env ?? process.env;
  if (opts.tokenFile) return readTokenFile(opts.tokenFile);
  const fromEnv = env.EPHEMERA_TOKEN?.trim();
  if (fromEnv) return fromEnv;
  if (env.EPHEMERA_TOKEN_FILE) return readTokenFile(env.EPHEMERA_TOKEN_FILE);
  if (opts.fallbackFile) {
    try {
      await stat(opts.fallbackFile);
    } catch {
      return undefined;
    }
    return readTokenFile(opts.fallbackFile);
  }
  return undefined;
}
