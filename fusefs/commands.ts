import * as path from 'node:path';
import type { Command } from 'commander';
import { formatError } from '../errors/index';
import { DEFAULT_POLICY_CONFIG, loadPolicyConfig } from '../policy/index';
import { cleanupNodeDaemon, DaemonClient, daemonPaths, DEFAULT_STATE_DIR, NodeDaemon, prepareSpillDir, SizedDiskTier, SizedMemoryTier } from './daemon/index';
import { FusefsError } from './errors';
import { isMountPoint, MEMORY_TIER_ROOT, sweepDeadMemoryTiers } from './memtier';
import { EphemeraMount } from './mount';
import type { BudgetSpec } from './tier-keeper';
import { TRANSPORT_CHOICES, type TransportChoice } from './native';
import { DEFAULT_HOLDER_TIMEOUT_S, holderListening, restartPaths } from './restart';
import { parseSize } from './units';

function parseCount(text: string | undefined, option: string): number {
  const n = Number(text);
  if (text === undefined || !Number.isSafeInteger(n) || n < 0) throw new FusefsError('E_BAD_OPTION', `${option}: "${text}" is not a non-negative integer`);
  return n;
}

/** Requests served per opcode, as the stopped and counters lines print them. */
const opCounts = (counters: { ops: Record<string, { count: number }> }): Record<string, number> =>
  Object.fromEntries(Object.entries(counters.ops).map(([k, v]) => [k, v.count]));
const opText = (ops: Record<string, number>): string => Object.entries(ops).map(([k, v]) => `${k}=${v}`).join(' ');

/** Registers `ephemera mount`, `ephemera node-daemon`, `ephemera node-ctl` and `ephemera cleanup`. */
export function registerFusefsCommands(program: Command): void {
  program
    .command('mount')
    .description('mount an Ephemera file system on DIR in the foreground (SIGINT/SIGTERM unmounts; with --restartable, SIGUSR1 hands it over to the next run)')
    .argument('<dir>', 'mount point (an existing empty directory)')
    .option('--allow-other', 'let other users (e.g. a container user) use the mount', false)
    .option('--queues <n>', 'serving threads, each on its own cloned /dev/fuse', '2')
    .option('--mode <mode>', 'auto | passthrough | writeback', 'auto')
    .option('--transport <t>', 'auto | device | uring (FUSE over io_uring); default $EPHEMERA_TRANSPORT or auto')
    .option('--size <size>', 'size quota over both tiers (statfs shows it; ENOSPC beyond), e.g. 1G')
    .option('--inodes <n>', 'inode quota (ENOSPC beyond)')
    .option('--spill-dir <dir>', 'disk tier directory (a plain local file system)')
    .option('--budget <size>', 'memory-tier budget: new files beyond it go to disk, closed files are spilled down to it (needs --spill-dir)')
    .option('--policy <file>', 'policy config (eviction order, anti-thrash window, headroom) for --budget or --cgroup')
    .option('--xattrs', 'support extended attributes (default: ENOTSUP; without FUSE_HANDLE_KILLPRIV_V2 they cost a GETXATTR round trip per write())', false)
    .option('--cgroup <dir>', "tie the store to this memory cgroup (the container's): keep its rss+shmem under limit - headroom")
    .option('--oom-pause', 'with --cgroup on v1: pause the OOM killer at the limit and raise an alarm (1 s watchdog)', false)
    .option('--size-hint <size>', "the function's profiled largest file: new files go straight to memory when 1.1x it fits")
    .option('--restartable', 'survive this process: a holder keeps the connection, and the same command run again takes it over (issue 14)', false)
    .option('--holder-timeout <s>', 'with --restartable: seconds the holder waits for a successor before it aborts the connection', String(DEFAULT_HOLDER_TIMEOUT_S))
    .option('--holder-cgroup <name>', "with --restartable: the cgroup (made under every hierarchy of /sys/fs/cgroup) the holder moves into, so a kill of this process's whole cgroup (systemd, a pod restart) spares it")
    .option('--json', 'print JSON lines (ready, stopped) instead of text', false)
    .action(async (dir: string, o: Record<string, string | boolean | undefined>) => {
      const queues = Number(o.queues);
      if (!Number.isInteger(queues) || queues < 1 || queues > 16) {
        throw new FusefsError('E_BAD_OPTION', `--queues: "${o.queues}" is not an integer in 1..16`);
      }
      const mode = String(o.mode);
      if (!['auto', 'passthrough', 'writeback'].includes(mode)) {
        throw new FusefsError('E_BAD_OPTION', `--mode: "${mode}" is not auto, passthrough or writeback`);
      }
      // The env default lets harnesses that spawn `ephemera mount` (bench, tests) pick the transport.
      const transport = String(o.transport ?? process.env.EPHEMERA_TRANSPORT ?? 'auto');
      if (!(TRANSPORT_CHOICES as readonly string[]).includes(transport)) {
        throw new FusefsError('E_BAD_OPTION', `--transport: "${transport}" is not auto, device or uring`);
      }
      const budget = o.budget === undefined ? undefined : parseSize(String(o.budget), '--budget');
      if (budget !== undefined && !o.spillDir) throw new FusefsError('E_BAD_OPTION', '--budget needs --spill-dir (files beyond the budget go to the disk tier)');
      const sizeQuota = o.size ? parseSize(String(o.size), '--size') : 0;
      const restartable = Boolean(o.restartable);
      const holderTimeoutS = parseCount(String(o.holderTimeout), '--holder-timeout');
      // Read before mounting: a bad policy file must not leave a mount behind.
      const policy = o.policy ? loadPolicyConfig(String(o.policy)) : DEFAULT_POLICY_CONFIG;
      const spillDir = o.spillDir ? String(o.spillDir) : undefined;
      if (spillDir) prepareSpillDir(spillDir);
      // With a size quota, the memory tier is a tmpfs of that size: under passthrough the kernel
      // writes without asking us, so only the tmpfs can answer ENOSPC to a file growing while open.
      // A restartable mount's is named for its mount point (not this pid, which the sweep of dead
      // tiers would take for gone), so the run that takes it over finds it (and the disk tier's
      // image) mounted with every file and uses it as it is; a new run replaces a leftover.
      const restart = restartable ? restartPaths(path.resolve(String(dir))) : undefined;
      const takingOver = restart !== undefined && holderListening(restart);
      if (sizeQuota > 0 && !restart) sweepDeadMemoryTiers();
      const sizedMemoryDir = restart ? `${MEMORY_TIER_ROOT}/held-mem-${path.basename(restart.dir)}` : `${MEMORY_TIER_ROOT}/mem-${process.pid}`;
      if (takingOver && sizeQuota > 0 && !isMountPoint(sizedMemoryDir)) {
        throw new FusefsError('E_TAKEOVER', `the held mount on ${String(dir)} was not started with --size (no sized memory tier at ${sizedMemoryDir}): run it again as it was started`);
      }
      const memoryTier = sizeQuota > 0 ? (takingOver ? SizedMemoryTier.adopt(sizedMemoryDir) : SizedMemoryTier.create(sizedMemoryDir, sizeQuota)) : undefined;
      // And the disk tier a file system of that size, for the same reason (a dead run's is replaced).
      let diskTier: SizedDiskTier | undefined;
      if (sizeQuota > 0 && spillDir) {
        try {
          diskTier = (takingOver ? SizedDiskTier.adopt(spillDir) : undefined) ?? SizedDiskTier.create(spillDir, sizeQuota);
        } catch (e) {
          process.stderr.write(`ephemera: warning: ${formatError(e)}; the --size quota binds the memory tier only (disk-tier files are checked at create and spill)\n`);
        }
      }
      let m: EphemeraMount;
      try {
        m = await EphemeraMount.open({
          mountpoint: dir,
          allowOther: Boolean(o.allowOther),
          queues,
          mode: mode as 'auto',
          sizeQuota,
          inodeQuota: o.inodes ? parseCount(String(o.inodes), '--inodes') : 0,
          spillDir: diskTier?.dir ?? spillDir,
          xattrs: Boolean(o.xattrs),
          transport: transport as TransportChoice,
          ...(memoryTier ? { sharedMemoryDir: memoryTier.dir, memoryTierSized: true } : {}),
          ...(diskTier ? { diskTierSized: true } : {}),
          ...(restartable ? { restart: { holderTimeoutS, ...(o.holderCgroup ? { holderCgroup: String(o.holderCgroup) } : {}) } } : {}),
        });
      } catch (e) {
        memoryTier?.close();
        diskTier?.close();
        throw e;
      }
      if (o.cgroup && budget !== undefined) throw new FusefsError('E_BAD_OPTION', '--cgroup and --budget both steer the memory tier: give one');
      // The tier keeper (fusefs/tier-keeper.ts) under the budget given: the cgroup's (rss+shmem
      // under limit - headroom), or a fixed one. Without either the store places by its defaults.
      const spec: BudgetSpec | undefined = o.cgroup
        ? {
            kind: 'cgroup',
            cgroupPath: String(o.cgroup),
            policy,
            oomPause: Boolean(o.oomPause),
            sizeHintBytes: o.sizeHint ? parseSize(String(o.sizeHint), '--size-hint') : null,
          }
        : budget !== undefined
          ? { kind: 'fixed', budget, policy }
          : undefined;
      if (spec) await m.keeper.use(spec);
      const cgroup = m.keeper.cgroup;
      cgroup?.on('alarm', (a) =>
        process.stderr.write(`ephemera: memory alarm: ${a.oomPaused ? 'OOM-paused, ' : ''}short ${a.shortfallBytes} B (no manager attached)\n`),
      );
      const keeperStats = spec ? m.keeper.totals : undefined;
      const json = Boolean(o.json);
      const say = (event: Record<string, unknown>, text: string) =>
        process.stdout.write(json ? JSON.stringify(event) + '\n' : text + '\n');
      // The handlers before the ready line: whoever reads it may signal at once (a test reading
      // counters, an orchestrator stopping us), and a signal before them would kill the daemon
      // (default action) instead of stopping it cleanly or printing counters.
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        await m.keeper.close();
        const counters = m.counters();
        await m.close();
        memoryTier?.close();
        diskTier?.close();
        const ops = opCounts(counters);
        // The keeper's moves and writebacks: what a bench row did besides serving (tier placement).
        // Printed as `adapter` for a cgroup (what bench rows read), `keeper` for a fixed budget.
        const moves = keeperStats ? { [cgroup ? 'adapter' : 'keeper']: { ...keeperStats } } : {};
        const fallbacks = { backingOpenFailures: counters.backingOpenFailures };
        say({ event: 'stopped', signal, counters: ops, unanswered: counters.unanswered, exceptions: counters.exceptions, badReplies: counters.badReplies, malformed: counters.malformed, ...fallbacks, ...moves },
          `ephemera: stopped (${signal}) ${opText(ops)}`);
        process.exit(signal === 'connection-lost' ? 1 : 0);
      };
      process.on('SIGINT', () => void stop('SIGINT'));
      process.on('SIGTERM', () => void stop('SIGTERM'));
      // An upgrade: SIGUSR1 leaves a restartable mount, its tiers and its files to the holder, and
      // the same command (of any build that reads the state) run next takes it over.
      process.on('SIGUSR1', () => {
        if (stopping) return;
        if (!m.restart) {
          process.stderr.write('ephemera: SIGUSR1 (hand over) ignored: this mount is not --restartable\n');
          return;
        }
        stopping = true;
        void (async () => {
          const counters = m.counters();
          try {
            await m.handOver();
          } catch (e) {
            // Still serving (io_uring) or half stopped (a stuck thread): exiting leaves it to the
            // holder as a crash would, and the successor resends what was read.
            process.stderr.write(`ephemera: ${formatError(e)}; exiting, the holder keeps the connection\n`);
          }
          say({ event: 'handed-over', counters: opCounts(counters), unanswered: counters.unanswered }, `ephemera: handed over to the holder ${opText(opCounts(counters))}`);
          process.exit(0);
        })();
      });
      // The per-opcode counters while serving: a bench reads round trips per file around one row.
      process.on('SIGUSR2', () => {
        if (stopping) return;
        const ops = opCounts(m.counters());
        const restart = m.restart ? { restart: m.restartInfo() } : {};
        say({ event: 'counters', counters: ops, ...restart }, `ephemera: counters ${opText(ops)}`);
      });
      void m.stopped.then(() => stop('connection-lost'));
      say(
        {
          event: 'ready',
          mountpoint: m.mountpoint,
          mode: m.mode,
          transport: m.transport,
          queues,
          pid: process.pid,
          protoMinor: m.info.protoMinor,
          killprivV2: m.info.killprivV2,
          ...(m.info.uringNote ? { uringNote: m.info.uringNote } : {}),
          ...(m.restart
            ? { takeover: m.restart.takeover, restart: m.info.restart, sinceStartMs: Math.round(performance.now()) }
            : {}),
        },
        `ephemera: ready ${m.mountpoint} mode=${m.mode} transport=${m.transport} queues=${queues} pid=${process.pid}` +
          (m.restart ? (m.restart.takeover ? ` took over (journal loaded in ${m.info.restart?.loadUs ?? 0} µs)` : ' restartable') : ''),
      );
    });

  program
    .command('node-daemon')
    .description('serve many Ephemera mounts in one process, driven through a control socket (JSON lines)')
    .option('--state-dir <dir>', 'records, spill dirs, memory tiers, socket', DEFAULT_STATE_DIR)
    .option('--socket <path>', 'control socket (default <state-dir>/control.sock)')
    .option('--mounts-dir <dir>', 'shared parent of mount points (default <state-dir>/mounts)')
    .option('--metrics-port <port>', 'also serve Prometheus /metrics on 127.0.0.1:PORT')
    .option('--policy <file>', 'policy config (eviction order, anti-thrash window)')
    .option('--restartable', "new mounts survive this process: holders keep their connections, and the next node-daemon on this state dir takes them over with their files (issue 14); SIGUSR1 stops it for an upgrade, handing the mounts over", false)
    .option('--holder-timeout <s>', 'with --restartable: seconds a holder waits for the next daemon before it aborts its connection', String(DEFAULT_HOLDER_TIMEOUT_S))
    .option('--holder-cgroup <name>', "with --restartable: the cgroup (made under every hierarchy of /sys/fs/cgroup) the holders move into, so a kill of the daemon's whole cgroup (systemd, a pod restart) spares them")
    .option('--json', 'print a JSON ready line on stdout', false)
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const metricsPort = o.metricsPort === undefined ? undefined : parseCount(String(o.metricsPort), '--metrics-port');
      const holderTimeoutS = parseCount(String(o.holderTimeout), '--holder-timeout');
      const { daemon, recovery } = await NodeDaemon.start({
        stateDir: String(o.stateDir),
        ...(o.socket ? { socket: String(o.socket) } : {}),
        ...(o.mountsDir ? { mountsDir: String(o.mountsDir) } : {}),
        ...(metricsPort !== undefined ? { metricsPort } : {}),
        ...(o.policy ? { policyFile: String(o.policy) } : {}),
        ...(o.restartable ? { restartable: true, holderTimeoutS, ...(o.holderCgroup ? { holderCgroup: String(o.holderCgroup) } : {}) } : {}),
      });
      const ready = {
        event: 'ready',
        pid: process.pid,
        socket: daemon.paths.socket,
        stateDir: daemon.paths.stateDir,
        mountsDir: daemon.paths.mountsDir,
        metricsPort: daemon.metricsPort,
        resumed: recovery.resumed,
        remounted: recovery.remounted,
        failed: recovery.failed,
      };
      // Handlers first: a SIGTERM right after the ready line must stop us cleanly.
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        await daemon.stop();
        process.stdout.write(o.json ? JSON.stringify({ event: 'stopped', signal }) + '\n' : `ephemera node-daemon: stopped (${signal})\n`);
        process.exit(0);
      };
      process.on('SIGINT', () => void stop('SIGINT'));
      process.on('SIGTERM', () => void stop('SIGTERM'));
      // An upgrade: the mounts stay with their holders for the next node-daemon on this state dir.
      process.on('SIGUSR1', () => {
        if (stopping) return;
        if (!o.restartable) {
          process.stderr.write('ephemera node-daemon: SIGUSR1 (hand over) ignored: not --restartable\n');
          return;
        }
        stopping = true;
        void daemon.handOver().then((r) => {
          process.stdout.write(o.json ? JSON.stringify({ event: 'handed-over', ...r }) + '\n' : `ephemera node-daemon: handed over ${r.handedOver.length} mounts (unmounted ${r.unmounted.length})\n`);
          process.exit(0);
        });
      });
      process.stdout.write(o.json ? JSON.stringify(ready) + '\n' : `ephemera node-daemon: ready socket=${ready.socket} pid=${process.pid} remounted=${recovery.remounted.length}\n`);
    });

  program
    .command('node-ctl')
    .description('send one control message (JSON) to the node daemon and print its reply; exit 1 on an error reply')
    .argument('<message>', 'e.g. \'{"type":"stats"}\'')
    .option('--state-dir <dir>', 'the daemon\'s state dir', DEFAULT_STATE_DIR)
    .option('--socket <path>', 'control socket (default <state-dir>/control.sock)')
    .action(async (message: string, o: Record<string, string | undefined>) => {
      const socket = o.socket ?? daemonPaths(o.stateDir).socket;
      const client = await DaemonClient.connect(socket, { timeoutMs: 120_000 });
      try {
        const reply = await client.send(message);
        process.stdout.write(JSON.stringify(reply) + '\n');
        if (!reply.ok) process.exitCode = 1;
      } finally {
        client.close();
      }
    });

  program
    .command('cleanup')
    .description('remove what a dead node daemon left: stale mounts, memory-tier tmpfs, spill dirs, state')
    .option('--state-dir <dir>', 'the daemon\'s state dir', DEFAULT_STATE_DIR)
    .option('--mounts-dir <dir>', 'shared parent of mount points, if the daemon was given one')
    .option('--json', 'print a JSON report', false)
    .action((o: Record<string, string | boolean | undefined>) => {
      const report = cleanupNodeDaemon(String(o.stateDir), o.mountsDir ? { mountsDir: String(o.mountsDir) } : {});
      // Memory tiers of killed single-mount `ephemera mount` processes live outside any state dir.
      report.removed.push(...sweepDeadMemoryTiers());
      process.stdout.write(
        o.json
          ? JSON.stringify(report) + '\n'
          : `ephemera cleanup: ${report.stateDir}: unmounted ${report.unmounted.length}, removed ${report.removed.length}${report.remaining.length ? `, left ${report.remaining.join(' ')}` : ''}\n`,
      );
    });
}
