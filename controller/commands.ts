import { Command, InvalidArgumentError, Option } from 'commander';
import { hostname } from 'node:os';
import path from 'node:path';
import { loadPolicyConfig, MiB, type Scoring } from '../policy';
import { ControllerError, errorMessage } from './errors';
import type { NodeView } from './state';
import { Controller } from './server';
import { defaultNodeStateDir, Engine, type TmpMode } from '../engine/index';
import { EphemeraTmpProvider } from '../engine/ephemera-provider';
import { NodeDaemon } from '../fusefs/daemon';
import Docker from 'dockerode';
import { DockerLimitWriter, TenantManager } from '../manager/index';
import { DockerTaskExecutor, NodeAgent, defaultNodeLimitBytes } from '../agent/index';
import { ensureTenantToken, tokenPath } from '../link/index';
import { readFile } from 'node:fs/promises';

/** The controller's agent token lives beside the tenants' link tokens, under this name. */
const AGENT_TOKEN_NAME = 'agents';
const DEFAULT_CONTROLLER_STATE = process.env.EPHEMERA_STATE_DIR ?? '/var/lib/ephemera/controller';

/** The agent token from `file`, or from the local controller's default place; undefined when neither exists. */
async function readAgentToken(file: string | undefined): Promise<string | undefined> {
  const where = file ?? tokenPath(DEFAULT_CONTROLLER_STATE, AGENT_TOKEN_NAME);
  try {
    return (await readFile(where, 'utf8')).trim() || undefined;
  } catch (err) {
    if (file) throw new ControllerError('E_BAD_ARGS', `cannot read the agent token file ${file}: ${errorMessage(err)}`);
    return undefined;
  }
}

const SCORINGS: Scoring[] = ['complementarity', 'min-gap', 'most-free'];

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value) ?? /^()()(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new InvalidArgumentError('expected HOST:PORT (or PORT)');
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

function positiveInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive integer`);
    return n;
  };
}

function fraction(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('expected a number in (0, 1]');
  return n;
}

function httpUrl(value: string): string {
  try {
    const u = new URL(value);
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new Error('scheme');
    return value;
  } catch {
    throw new InvalidArgumentError('expected a URL such as http://127.0.0.1:7070');
  }
}

function formatMiB(bytes: number): string {
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

async function getJson(url: string): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new ControllerError('E_NO_NODES', `cannot reach the controller at ${url}: ${errorMessage(err)}`);
  }
  const body = (await res.json()) as unknown;
  if (!res.ok) throw new ControllerError('E_EXECUTION', `${url} answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/** Registers `ephemera controller`, `ephemera controller status` and `ephemera node`. */
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
    .action(async (opts: { listen: { host: string; port: number }; stateDir: string; scoring?: Scoring; policy?: string; heartbeatMs: number; nodeTimeoutMs: number; agentToken: boolean }) => {
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
      });
      process.stdout.write(
        `ephemera controller listening on ${ctl.url} (scoring ${ctl.state.scoring}, agents at ${ctl.url.replace(/^http/, 'ws')}/agents, ` +
          `${agentToken ? `agent token in ${tokenPath(stateDir, AGENT_TOKEN_NAME)}` : 'no agent token'})\n`,
      );
      await waitForSignal();
      await ctl.close();
    });

  controller
    .command('status')
    .description('show the controller\'s nodes (N_lim, N_alloc, N_req, tasks)')
    .option('--url <url>', 'controller URL', httpUrl, process.env.EPHEMERA_CONTROLLER ?? 'http://127.0.0.1:7070')
    .option('--json', 'print the JSON the controller returns')
    .action(async (opts: { url: string; json?: boolean }) => {
      const body = (await getJson(new URL('/nodes', opts.url).toString())) as { scoring: string; nodes: NodeView[] };
      process.stdout.write(opts.json ? `${JSON.stringify(body, null, 2)}\n` : formatNodeTable(body.scoring, body.nodes));
    });

  program
    .command('node')
    .description('run a node: the node daemon serving every container\'s Ephemera /tmp and, with --controller, the agent that runs the invocations placed here')
    .option('--controller <url>', 'controller URL, e.g. http://127.0.0.1:7070 (omit: serve /tmp mounts only)', httpUrl)
    .option('--state-dir <dir>', 'node daemon state (records, spill dirs, memory tiers, control socket, manager sockets)', defaultNodeStateDir())
    .option('--tmp <kind>', 'function containers\' /tmp: ephemera | overlay | tmpfs', 'ephemera')
    .option('--name <name>', 'node name (unique in the cluster)', hostname())
    .option('--node-limit <MiB>', 'N_lim in MiB (default: --memory-fraction of MemTotal)', positiveInt('--node-limit'))
    .option('--memory-fraction <f>', 'share of MemTotal set aside for functions when --node-limit is not given', fraction, 0.75)
    .option('--reconnect-max-ms <ms>', 'longest wait between reconnection attempts', positiveInt('--reconnect-max-ms'), 5000)
    .option('--no-sharing', 'no tenant managers: containers keep their own limits (no lending)')
    .option('--agent-token-file <file>', "the controller's agent token (default: $EPHEMERA_AGENT_TOKEN_FILE, else the local controller's, if there is one)")
    .option('--tmp-size <MiB>', "size quota of each container's /tmp over both tiers (ENOSPC beyond, as a sized tmpfs; default: half of RAM as Docker's --tmpfs, at most a quarter of the disk tier's free space)", positiveInt('--tmp-size'))
    .option('--oom-pause', "cgroup v1: pause a container's OOM killer at its limit and ask its manager for an emergency loan (1 s watchdog unpauses)", false)
    .action(async (opts: { controller?: string; stateDir: string; tmp: string; name: string; nodeLimit?: number; memoryFraction: number; reconnectMaxMs: number; sharing: boolean; oomPause: boolean; agentTokenFile?: string; tmpSize?: number }) => {
      const tmp: TmpMode | undefined =
        opts.tmp === 'ephemera' ? { kind: 'bind' } : opts.tmp === 'overlay' ? { kind: 'overlay' } : opts.tmp === 'tmpfs' ? { kind: 'tmpfs' } : undefined;
      if (!tmp) throw new ControllerError('E_BAD_REQUEST', `--tmp: "${opts.tmp}" is not ephemera, overlay or tmpfs`);
      // One daemon per node serves every container's /tmp (a Node process per container would cost
      // more memory than many functions leave idle).
      const { daemon, recovery } = await NodeDaemon.start({ stateDir: opts.stateDir });
      process.stdout.write(`ephemera node ${opts.name}: node daemon on ${daemon.paths.socket} (${recovery.remounted.length} mount(s) recovered)\n`);
      const provider = await EphemeraTmpProvider.start({
        socketPath: daemon.paths.socket,
        oomPause: opts.oomPause,
        ...(opts.tmpSize !== undefined ? { sizeQuotaBytes: opts.tmpSize * MiB } : {}),
      });
      let agent: NodeAgent | undefined;
      // One tenant manager per tenant, opened on its first container; it lends memory between that
      // tenant's running containers and is the one writer of their limits.
      const managers = new Map<string, Promise<TenantManager>>();
      const docker = new Docker();
      const managerOf = (tenant: string): Promise<TenantManager> => {
        let m = managers.get(tenant);
        if (!m) {
          m = TenantManager.recover(docker, { tenant, stateDir: opts.stateDir, limitWriter: new DockerLimitWriter(docker) });
          m.catch(() => managers.delete(tenant));
          managers.set(tenant, m);
        }
        return m;
      };
      try {
        if (opts.controller) {
          const engine = await Engine.connect({ tmpProvider: provider });
          const limitBytes = opts.nodeLimit !== undefined ? opts.nodeLimit * MiB : defaultNodeLimitBytes(opts.memoryFraction);
          const token = await readAgentToken(opts.agentTokenFile ?? process.env.EPHEMERA_AGENT_TOKEN_FILE);
          agent = await NodeAgent.start({
            controllerUrl: opts.controller,
            name: opts.name,
            limitBytes,
            executor: new DockerTaskExecutor(engine, opts.name, {}, tmp, opts.sharing ? managerOf : undefined),
            reconnectMaxMs: opts.reconnectMaxMs,
            ...(token ? { token } : {}),
          });
          process.stdout.write(`ephemera node ${agent.name}: N_lim ${formatMiB(limitBytes)} MiB, controller ${opts.controller}, /tmp ${opts.tmp}, sharing ${opts.sharing ? 'on' : 'off'}\n`);
        }
        await waitForSignal();
      } finally {
        await agent?.close();
        for (const m of managers.values()) await (await m.catch(() => undefined))?.close();
        await provider.close();
        await daemon.stop();
      }
    });
}


function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    // Signal listeners do not keep Node alive; an agent waiting out a controller restart has nothing else.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const done = () => {
      clearInterval(keepAlive);
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}
