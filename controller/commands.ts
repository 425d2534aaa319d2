import { Command, InvalidArgumentError, Option } from 'commander';
import path from 'node:path';
import { loadPolicyConfig, MiB, type Scoring } from '../policy/index';
import { ControllerError } from './errors';
import type { NodeView } from './state';
import { Controller, EXTENDER_TOKEN_NAME, OPERATOR_TOKEN_NAME } from './server';
import { ControllerClient, resolveToken } from './client';
import type { TenantLimits, TokenInfo } from './auth';
import { ensureTenantToken, tokenPath } from '../link/index';
import { writeFile } from 'node:fs/promises';

/** The controller's agent token lives beside the tenants' link tokens, under this name. */
export const AGENT_TOKEN_NAME = 'agents';
export const DEFAULT_CONTROLLER_STATE = process.env.EPHEMERA_STATE_DIR ?? '/var/lib/ephemera/controller';

const SCORINGS: Scoring[] = ['complementarity', 'min-gap', 'most-free'];

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value) ?? /^()()(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new InvalidArgumentError('expected HOST:PORT (or PORT)');
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export function positiveInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive integer`);
    return n;
  };
}

function nonNegativeInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${what} must be a non-negative integer`);
    return n;
  };
}

export function httpUrl(value: string): string {
  try {
    const u = new URL(value);
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new Error('scheme');
    return value;
  } catch {
    throw new InvalidArgumentError('expected a URL such as http://127.0.0.1:7070');
  }
}

export function formatMiB(bytes: number): string {
  return (bytes / MiB).toFixed(0);
}

/** The `controller status` table: one row per node with N_lim / N_alloc / N_req in MiB. */
export function formatNodeTable(scoring: string, nodes: readonly NodeView[]): string {
  const rows = [['NODE', 'STATUS', 'N_LIM MiB', 'N_ALLOC MiB', 'N_REQ MiB', 'TASKS']];
  for (const n of nodes) rows.push([n.name, n.status, formatMiB(n.limitBytes), formatMiB(n.allocBytes), formatMiB(n.reqBytes), String(n.tasks.length)]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === 0 || i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  return `scoring: ${scoring}\n${lines.join('\n')}\n`;
}

interface ClientOpts {
  url: string;
  tokenFile?: string;
}

/** `--url` and `--token-file` on every command that talks to a running controller. */
function withClient(command: Command): Command {
  return command
    .option('--url <url>', 'controller URL', httpUrl, process.env.EPHEMERA_CONTROLLER ?? 'http://127.0.0.1:7070')
    .option(
      '--token-file <file>',
      `bearer token file (0600; default: $EPHEMERA_TOKEN, else $EPHEMERA_TOKEN_FILE, else the local controller's operator token ${tokenPath(DEFAULT_CONTROLLER_STATE, OPERATOR_TOKEN_NAME)})`,
    );
}

async function clientFrom(opts: ClientOpts): Promise<ControllerClient> {
  const token = await resolveToken({ ...(opts.tokenFile ? { tokenFile: opts.tokenFile } : {}), fallbackFile: tokenPath(DEFAULT_CONTROLLER_STATE, OPERATOR_TOKEN_NAME) });
  if (token === undefined) {
    throw new ControllerError('E_UNAUTHORIZED', 'no token: give --token-file, or set EPHEMERA_TOKEN or EPHEMERA_TOKEN_FILE (a tenant token, or the operator token from <state-dir>/tokens/operator.token)');
  }
  return new ControllerClient(opts.url, token, 30_000);
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Registers `ephemera controller` and its client commands (status, token, limits, functions). */
export function registerControllerCommands(program: Command): void {
  const controller = program
    .command('controller')
    .description('run the cluster controller: node states, deploy/profile/invoke API, Kubernetes scheduler extender')
    .option('--listen <host:port>', 'address of the HTTP API and the agent link', parseListen, { host: '127.0.0.1', port: 7070 })
    .option('--state-dir <dir>', 'durable state (function profiles, agent token)', DEFAULT_CONTROLLER_STATE)
    .addOption(new Option('--scoring <scoring>', 'placement scoring (default: the policy file\'s, else complementarity)').choices(SCORINGS))
    .option('--policy <file>', 'policy configuration (YAML or JSON); its scheduler section applies')
    .option('--heartbeat-ms <ms>', 'agents send a heartbeat this often', positiveInt('--heartbeat-ms'), 2000)
    .option('--node-timeout-ms <ms>', 'an agent silent (or disconnected) this long is lost', positiveInt('--node-timeout-ms'), 6000)
    .option('--no-agent-token', 'accept any agent that reaches the port (default: agents present the token in <state-dir>/tokens/agents.token)')
    .option('--tls-cert <file>', 'serve HTTPS (and WSS to agents) with this PEM certificate; needed to listen beyond loopback')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--tls-client-ca <file>', "a CA that signs only kube-scheduler's client certificate (tlsConfig.certFile/keyFile): it may call /scheduler/filter and /scheduler/prioritize")
    .option('--behind-tls-proxy', 'listen beyond loopback without TLS because a TLS-terminating proxy is the only way to the port', false)
    .action(async (opts: { listen: { host: string; port: number }; stateDir: string; scoring?: Scoring; policy?: string; heartbeatMs: number; nodeTimeoutMs: number; agentToken: boolean; tlsCert?: string; tlsKey?: string; tlsClientCa?: string; behindTlsProxy: boolean }) => {
      if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new ControllerError('E_BAD_ARGS', '--tls-cert and --tls-key go together');
      if (opts.tlsClientCa && !opts.tlsCert) throw new ControllerError('E_BAD_ARGS', '--tls-client-ca needs --tls-cert and --tls-key');
      const policy = opts.policy ? loadPolicyConfig(opts.policy) : undefined;
      const stateDir = path.resolve(opts.stateDir);
      // Generated once (0600) and reused: give the file to each node's agent (--agent-token-file).
      const agentToken = opts.agentToken ? await ensureTenantToken(stateDir, AGENT_TOKEN_NAME) : undefined;
      const ctl = await Controller.start({
        host: opts.listen.host,
        port: opts.listen.port,
        stateDir,
        scoring: opts.scoring ?? policy?.scheduler.scoring ?? 'complementarity',
        indexedFromNodes: policy?.scheduler.indexedFromNodes ?? 256,
        heartbeatMs: opts.heartbeatMs,
        nodeTimeoutMs: opts.nodeTimeoutMs,
        ...(agentToken ? { agentToken } : {}),
        ...(opts.tlsCert && opts.tlsKey ? { tls: { certFile: opts.tlsCert, keyFile: opts.tlsKey, ...(opts.tlsClientCa ? { clientCaFile: opts.tlsClientCa } : {}) } } : {}),
        behindTlsProxy: opts.behindTlsProxy,
      });
      // Paths only: the tokens themselves never go to stdout or the log.
      process.stdout.write(
        `ephemera controller listening on ${ctl.url} (scoring ${ctl.state.scoring}, agents at ${ctl.url.replace(/^http/, 'ws')}/agents, ` +
          `${agentToken ? `agent token in ${tokenPath(stateDir, AGENT_TOKEN_NAME)}` : 'no agent token'}; operator token in ${tokenPath(stateDir, OPERATOR_TOKEN_NAME)}; ` +
          `extender urlPrefix ${ctl.url}/scheduler/<the secret in ${tokenPath(stateDir, EXTENDER_TOKEN_NAME)}>)\n`,
      );
      await waitForSignal(false);
      await ctl.close();
    });

  withClient(controller.command('status').description("show the controller's nodes (N_lim, N_alloc, N_req, tasks); needs the operator token"))
    .option('--json', 'print the JSON the controller returns')
    .action(async (opts: ClientOpts & { json?: boolean }) => {
      const body = await (await clientFrom(opts)).call<{ scoring: string; nodes: NodeView[] }>('GET', '/nodes');
      process.stdout.write(opts.json ? `${JSON.stringify(body, null, 2)}\n` : formatNodeTable(body.scoring, body.nodes));
    });

  const token = controller.command('token').description("tenants' API tokens (operator token needed): create, list, revoke");
  withClient(token.command('create').description("create a tenant's token; it is shown once (the controller keeps only its hash)"))
    .requiredOption('--tenant <name>', 'the tenant every request with this token acts for')
    .option('--label <text>', 'what the token is for (shown by list)')
    .option('--out <file>', 'write the token to this file (0600) instead of stdout')
    .action(async (opts: ClientOpts & { tenant: string; label?: string; out?: string }) => {
      const issued = await (await clientFrom(opts)).call<TokenInfo & { token: string }>('POST', '/tokens', { tenant: opts.tenant, ...(opts.label ? { label: opts.label } : {}) });
      if (opts.out) {
        await writeFile(opts.out, `${issued.token}\n`, { mode: 0o600, flag: 'wx' });
        process.stdout.write(`token ${issued.id} for tenant ${issued.tenant} written to ${opts.out}\n`);
      } else {
        process.stdout.write(`${issued.token}\n`);
      }
    });
  withClient(token.command('list').description('list tokens (ids, tenants, labels; never the tokens)'))
    .option('--tenant <name>', "only this tenant's")
    .action(async (opts: ClientOpts & { tenant?: string }) => {
      const { tokens } = await (await clientFrom(opts)).call<{ tokens: TokenInfo[] }>('GET', `/tokens${opts.tenant ? `?tenant=${encodeURIComponent(opts.tenant)}` : ''}`);
      const rows = [['ID', 'TENANT', 'CREATED', 'LABEL'], ...tokens.map((t) => [t.id, t.tenant, t.createdAt, t.label ?? ''])];
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      process.stdout.write(`${rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')}\n`);
    });
  withClient(token.command('revoke').description('revoke a token: refused from the next request on').argument('<id>', 'token id (from list)')).action(
    async (id: string, opts: ClientOpts) => {
      await (await clientFrom(opts)).call('DELETE', `/tokens/${encodeURIComponent(id)}`);
      process.stdout.write(`token ${id} revoked\n`);
    },
  );

  const limits = controller.command('limits').description("a tenant's limits, enforced at the controller (set needs the operator token)");
  withClient(limits.command('show').argument('<tenant>').description("the tenant's limits and what it holds now")).action(async (tenant: string, opts: ClientOpts) => {
    printJson(await (await clientFrom(opts)).call('GET', `/tenants/${encodeURIComponent(tenant)}/limits`));
  });
  withClient(limits.command('set').argument('<tenant>').description("replace the tenant's limits (a limit not given is unlimited)"))
    .option('--functions <n>', 'deployed functions', nonNegativeInt('--functions'))
    .option('--concurrent <n>', 'invocations running at once', nonNegativeInt('--concurrent'))
    .option('--memory <MiB>', 'sum of T_lim over its running invocations (and the largest T_lim a function may have)', nonNegativeInt('--memory'))
    .action(async (tenant: string, opts: ClientOpts & { functions?: number; concurrent?: number; memory?: number }) => {
      const body: TenantLimits = {
        ...(opts.functions !== undefined ? { functions: opts.functions } : {}),
        ...(opts.concurrent !== undefined ? { concurrentInvocations: opts.concurrent } : {}),
        ...(opts.memory !== undefined ? { memoryMiB: opts.memory } : {}),
      };
      printJson(await (await clientFrom(opts)).call('PUT', `/tenants/${encodeURIComponent(tenant)}/limits`, body));
    });

  const functions = controller.command('functions').description('deployed functions (a tenant token sees its own; the operator token all)');
  withClient(functions.command('list').description('list functions')).action(async (opts: ClientOpts) => {
    const { functions: list } = await (await clientFrom(opts)).call<{ functions: { tenant: string; name: string; image: string; limitBytes: number }[] }>('GET', '/functions');
    for (const f of list) process.stdout.write(`${f.tenant}/${f.name}  ${f.image}  ${formatMiB(f.limitBytes)} MiB\n`);
  });
  withClient(functions.command('delete').argument('<name>').description('delete a function (its running invocations finish)'))
    .option('--tenant <name>', 'with the operator token: whose function')
    .action(async (name: string, opts: ClientOpts & { tenant?: string }) => {
      const fn = await (await clientFrom(opts)).call<{ tenant: string; name: string }>('DELETE', `/functions/${encodeURIComponent(name)}${opts.tenant ? `?tenant=${encodeURIComponent(opts.tenant)}` : ''}`);
      process.stdout.write(`function ${fn.tenant}/${fn.name} deleted\n`);
    });
}

/** The signal that stops `ephemera controller` or `ephemera node`: SIGINT, SIGTERM, or (with `handOver`) SIGUSR1. */
export function waitForSignal(handOver: boolean): Promise<string> {
  return new Promise((resolve) => {
    // Signal listeners do not keep Node alive; an agent waiting out a controller restart has nothing else.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const signals = ['SIGINT', 'SIGTERM', ...(handOver ? ['SIGUSR1'] : [])];
    const handlers = signals.map((sig) => {
      const h = () => {
        clearInterval(keepAlive);
        signals.forEach((s, i) => process.off(s, handlers[i]!));
        resolve(sig);
      };
      process.on(sig, h);
      return h;
    });
  });
}
