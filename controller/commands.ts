import { Command, InvalidArgumentError, Option } from 'commander';
import { hostname } from 'node:os';
import path from 'node:path';
import { loadPolicyConfig, MiB, type Scoring } from '../policy';
import { ControllerError, errorMessage } from './errors';
import type { NodeView } from './state';
import { Controller, EXTENDER_TOKEN_NAME, OPERATOR_TOKEN_NAME } from './server';
import { ControllerClient, resolveToken } from './client';
import type { TenantLimits, TokenInfo } from './auth';
import { defaultNodeStateDir, Engine, type TmpMode } from '../engine/index';
import { EphemeraTmpProvider } from '../engine/ephemera-provider';
import { NodeDaemon } from '../fusefs/daemon';
import Docker from 'dockerode';
import { DockerLimitWriter, TenantManager } from '../manager/index';
import { DockerTaskExecutor, NodeAgent, defaultNodeLimitBytes } from '../agent/index';
import { VolumePlugin } from '../volumes/index';
import { CsiNodePlugin, loadCsiConfig } from '../csi/index';
import { ensureTenantToken, tokenPath } from '../link/index';
import { readFile, writeFile } from 'node:fs/promises';

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

function nonNegativeInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${what} must be a non-negative integer`);
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
    .option('--volume-driver <name>', 'serve the Docker volume driver <name> (docker run --mount type=volume,volume-driver=<name>,dst=/tmp)', 'ephemera')
    .option('--no-volume-driver', 'no Docker volume driver')
    .option('--restartable', "containers' /tmp survive this process: a holder keeps each mount's connection and the next `ephemera node` on this state dir takes the mounts over with their files (issue 14); SIGUSR1 stops it for an upgrade, handing the mounts over", false)
    .option('--holder-timeout <s>', 'with --restartable: seconds a holder waits for the next node process before it aborts its connection', positiveInt('--holder-timeout'), 30)
    .option('--holder-cgroup <name>', "with --restartable: the cgroup (made under every hierarchy of --cgroup-fs) the holders move into, so a kill of this process's whole cgroup (systemd, a pod restart) spares them")
    .option('--cgroup-fs <dir>', 'where the cgroup hierarchies are mounted (a pod sees the host\'s at /host/sys/fs/cgroup)', '/sys/fs/cgroup')
    .option('--csi-config <file>', 'serve the Kubernetes CSI node plugin (ephemeral inline volumes) with this JSON config: driver name, namespace → tenant map, sockets (docs/kubernetes.md)')
    .action(async (opts: { controller?: string; stateDir: string; tmp: string; name: string; nodeLimit?: number; memoryFraction: number; reconnectMaxMs: number; sharing: boolean; oomPause: boolean; agentTokenFile?: string; tmpSize?: number; volumeDriver: string | false; csiConfig?: string; restartable: boolean; holderTimeout: number; holderCgroup?: string; cgroupFs: string }) => {
      const tmp: TmpMode | undefined =
        opts.tmp === 'ephemera' ? { kind: 'bind' } : opts.tmp === 'overlay' ? { kind: 'overlay' } : opts.tmp === 'tmpfs' ? { kind: 'tmpfs' } : undefined;
      if (!tmp) throw new ControllerError('E_BAD_REQUEST', `--tmp: "${opts.tmp}" is not ephemera, overlay or tmpfs`);
      // A bad CSI config fails before anything starts.
      const csiConfig = opts.csiConfig ? loadCsiConfig(opts.csiConfig) : undefined;
      // One daemon per node serves every container's /tmp (a Node process per container would cost
      // more memory than many functions leave idle).
      const { daemon, recovery } = await NodeDaemon.start({
        stateDir: opts.stateDir,
        ...(opts.restartable ? { restartable: true, holderTimeoutS: opts.holderTimeout, cgroupFs: opts.cgroupFs, ...(opts.holderCgroup ? { holderCgroup: opts.holderCgroup } : {}) } : {}),
      });
      process.stdout.write(
        `ephemera node ${opts.name}: node daemon on ${daemon.paths.socket} (pid ${process.pid}; ${recovery.resumed.length} mount(s) taken over with their files, ${recovery.remounted.length} mounted empty)\n`,
      );
      const provider = await EphemeraTmpProvider.start({
        socketPath: daemon.paths.socket,
        oomPause: opts.oomPause,
        ...(opts.tmpSize !== undefined ? { sizeQuotaBytes: opts.tmpSize * MiB } : {}),
      });
      let agent: NodeAgent | undefined;
      let volumes: VolumePlugin | undefined;
      let csi: CsiNodePlugin | undefined;
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
      // SIGUSR1 (--restartable only) is an upgrade: the containers' /tmp mounts stay with their holders.
      let signal = 'SIGTERM';
      try {
        if (opts.volumeDriver !== false) {
          volumes = await VolumePlugin.start({
            name: opts.volumeDriver,
            daemonSocket: daemon.paths.socket,
            stateDir: opts.stateDir,
            docker,
            defaultSizeQuota: provider.sizeQuotaBytes,
            ...(opts.sharing ? { managerOf } : {}),
          });
          process.stdout.write(`ephemera node ${opts.name}: Docker volume driver "${opts.volumeDriver}" on ${volumes.socketPath}\n`);
        }
        if (csiConfig) {
          // Pods' stores have no tenant manager yet: lending needs a limit writer that resizes pods (docs/kubernetes.md).
          csi = await CsiNodePlugin.start({ config: csiConfig, daemonSocket: daemon.paths.socket, defaultSizeQuota: provider.sizeQuotaBytes });
          process.stdout.write(`ephemera node ${opts.name}: CSI node plugin "${csi.config.driverName}" on ${csi.csiSocket}, registration ${csi.registrationSocket}\n`);
        }
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
        signal = await waitForSignal(opts.restartable);
      } finally {
        await agent?.close();
        await csi?.close();
        await volumes?.close();
        // Closing a manager takes nothing back: its loans stay in force for the next node to adopt.
        for (const m of managers.values()) await (await m.catch(() => undefined))?.close();
        await provider.close();
        if (signal === 'SIGUSR1') {
          const r = await daemon.handOver();
          process.stdout.write(`ephemera node ${opts.name}: handed ${r.handedOver.length} mount(s) over to their holders for the next node process (unmounted ${r.unmounted.length})\n`);
          // Now, not when the last socket of the closed clients times out: the holders count from
          // the moment the mounts were let go, and the next node process may start at once.
          process.exit(0);
        } else {
          await daemon.stop();
        }
      }
    });
}


/** The signal that stops `ephemera node`: SIGINT, SIGTERM, or (with `handOver`) SIGUSR1. */
function waitForSignal(handOver: boolean): Promise<string> {
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
