import { InvalidArgumentError, type Command } from 'commander';
import Docker from 'dockerode';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { MiB } from '../policy/index';
import { errorMessage, tokenPath } from '../link/index';
import { cleanupNodeDaemon, NodeDaemon } from '../fusefs/index';
import { nodeStateDirOption, Engine, type TmpMode, type TmpProvider } from '../engine/index';
import { DockerLimitWriter, TenantManager } from '../manager/index';
import { NodeAgent, defaultNodeLimitBytes } from '../agent/index';
import {
  AGENT_TOKEN_NAME,
  ControllerError,
  DEFAULT_CONTROLLER_STATE,
  formatMiB,
  httpUrl,
  positiveInt,
  waitForSignal,
} from '../controller/index';
import { CsiNodePlugin, loadCsiConfig } from './csi/index';
import { VolumePlugin } from './volumes/index';
import { DockerTaskExecutor } from './docker-executor';
import { EphemeraTmpProvider } from './ephemera-provider';

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

function fraction(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('expected a number in (0, 1]');
  return n;
}

/**
 * `--tmp ephemera` of `ephemera run` and `ephemera profile` (handed to the engine's commands): a
 * provider on the node daemon at `nodeSocket`, or on one started for this command and cleaned up after it.
 */
export async function openEphemeraTmp(nodeSocket: string | undefined): Promise<{ provider: TmpProvider; close(): Promise<void> }> {
  const ownState = `/var/lib/ephemera/run-${process.pid}`;
  const provider = await EphemeraTmpProvider.start(nodeSocket ? { socketPath: nodeSocket } : { stateDir: ownState });
  return {
    provider,
    close: async () => {
      await provider.close();
      if (!nodeSocket) cleanupNodeDaemon(ownState);
    },
  };
}

/**
 * Registers `ephemera node`: the composition of a node. The node daemon serves every container's
 * /tmp; the engine gets its Ephemera provider; the Docker volume driver, the CSI node plugin and,
 * with --controller, the agent run beside it, with one tenant manager per tenant.
 */
export function registerNodeCommands(program: Command): void {
  program
    .command('node')
    .description('run a node: the node daemon serving every container\'s Ephemera /tmp and, with --controller, the agent that runs the invocations placed here')
    .option('--controller <url>', 'controller URL, e.g. http://127.0.0.1:7070 (omit: serve /tmp mounts only)', httpUrl)
    .addOption(nodeStateDirOption('node daemon state (records, spill dirs, memory tiers, control socket, manager sockets)'))
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
