import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { DaemonClient, cleanupNodeDaemon } from '../fusefs/daemon';
import type { BenchResult } from './frame';
import { readRssKiB } from './host-targets';

const CLI = path.resolve(__dirname, '..', '..', 'bin', 'ephemera.js').replace(`${path.sep}dist${path.sep}`, path.sep);

/**
 * The node daemon's resident memory with 1, 10 and 100 idle mounts (issue goal: ≤ 1 MiB per mount;
 * one daemon serves a node because a Node process per container would cost more than many functions
 * leave idle). A separate daemon process, so the bench's own heap is not in the figure.
 */
export async function probeNodeDaemonMemory(runDir: string, counts: readonly number[] = [1, 10, 100], pass = 1): Promise<BenchResult[]> {
  const stateDir = fs.mkdtempSync(path.join(runDir, 'node-daemon-'));
  const cli = fs.existsSync(CLI) ? CLI : path.resolve(process.cwd(), 'bin', 'ephemera.js');
  const child = spawn(process.execPath, [cli, 'node-daemon', '--state-dir', stateDir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const results: BenchResult[] = [];
  let client: DaemonClient | undefined;
  try {
    const ready = await new Promise<{ pid: number; socket: string }>((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout! });
      const timer = setTimeout(() => reject(new Error('node-daemon: no ready line within 20 s')), 20_000);
      lines.on('line', (l) => {
        try {
          const e = JSON.parse(l) as { event?: string; pid?: number; socket?: string };
          if (e.event === 'ready') {
            clearTimeout(timer);
            resolve({ pid: e.pid ?? child.pid!, socket: e.socket ?? path.join(stateDir, 'control.sock') });
          }
        } catch {
          /* a log line */
        }
      });
      child.once('exit', (code) => reject(new Error(`node-daemon exited (${code}) before its ready line`)));
    });
    client = await DaemonClient.connect(ready.socket);
    const base = readRssKiB(ready.pid);
    let made = 0;
    for (const n of [...counts].sort((a, b) => a - b)) {
      for (; made < n; made++) {
        await client.addMount({ id: `idle-${made}`, budget: 1 << 20, sizeQuota: 0, inodeQuota: 0, owner: 'bench' });
      }
      await new Promise((r) => setTimeout(r, 300));
      const rss = readRssKiB(ready.pid);
      results.push({
        suite: 'fio',
        target: 'ephemera',
        workload: 'node-daemon-rss',
        parameters: { mounts: n },
        pass,
        phase: 'n/a',
        figures: { rss_mib: rss / 1024, per_mount_kib: (rss - base) / n, base_rss_mib: base / 1024 },
        oomKills: null,
      });
    }
  } finally {
    client?.close();
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(killer);
    }
    try {
      // Whatever the daemon left (a killed one leaves its mounts): cleanup detaches and removes it.
      cleanupNodeDaemon(stateDir);
    } catch {
      /* nothing left */
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
  return results;
}
