import type { Command } from 'commander';
import { EphemeraError } from './errors';
import { EphemeraMount } from './mount';
import { parseSize } from './units';

/** Registers `ephemera mount` (and, from the node-daemon work on, its siblings). */
export function registerFusefsCommands(program: Command): void {
  program
    .command('mount')
    .description('mount an Ephemera file system on DIR in the foreground (SIGINT/SIGTERM unmounts)')
    .argument('<dir>', 'mount point (an existing empty directory)')
    .option('--allow-other', 'let other users (e.g. a container user) use the mount', false)
    .option('--queues <n>', 'serving threads, each on its own cloned /dev/fuse', '2')
    .option('--mode <mode>', 'auto | passthrough | writeback', 'auto')
    .option('--size <size>', 'size quota over both tiers (statfs shows it; ENOSPC beyond), e.g. 1G')
    .option('--inodes <n>', 'inode quota (ENOSPC beyond)')
    .option('--spill-dir <dir>', 'disk tier directory (a plain local file system)')
    .option('--json', 'print JSON lines (ready, stopped) instead of text', false)
    .action(async (dir: string, o: Record<string, string | boolean | undefined>) => {
      const queues = Number(o.queues);
      if (!Number.isInteger(queues) || queues < 1 || queues > 16) {
        throw new EphemeraError('E_BAD_OPTION', `--queues: "${o.queues}" is not an integer in 1..16`);
      }
      const mode = String(o.mode);
      if (!['auto', 'passthrough', 'writeback'].includes(mode)) {
        throw new EphemeraError('E_BAD_OPTION', `--mode: "${mode}" is not auto, passthrough or writeback`);
      }
      const m = await EphemeraMount.open({
        mountpoint: dir,
        allowOther: Boolean(o.allowOther),
        queues,
        mode: mode as 'auto',
        sizeQuota: o.size ? parseSize(String(o.size), '--size') : 0,
        inodeQuota: o.inodes ? Number(o.inodes) : 0,
        spillDir: o.spillDir ? String(o.spillDir) : undefined,
      });
      const json = Boolean(o.json);
      const say = (event: Record<string, unknown>, text: string) =>
        process.stdout.write(json ? JSON.stringify(event) + '\n' : text + '\n');
      say(
        { event: 'ready', mountpoint: m.mountpoint, mode: m.mode, queues, pid: process.pid, protoMinor: m.info.protoMinor },
        `ephemera: ready ${m.mountpoint} mode=${m.mode} queues=${queues} pid=${process.pid}`,
      );
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        const counters = m.counters();
        await m.close();
        const ops = Object.fromEntries(Object.entries(counters.ops).map(([k, v]) => [k, v.count]));
        say({ event: 'stopped', signal, counters: ops, unanswered: counters.unanswered, exceptions: counters.exceptions },
          `ephemera: stopped (${signal}) ${Object.entries(ops).map(([k, v]) => `${k}=${v}`).join(' ')}`);
        process.exit(signal === 'connection-lost' ? 1 : 0);
      };
      process.on('SIGINT', () => void stop('SIGINT'));
      process.on('SIGTERM', () => void stop('SIGTERM'));
      void m.stopped.then(() => stop('connection-lost'));
    });
}
