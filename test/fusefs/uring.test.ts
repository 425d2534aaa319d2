// FUSE over io_uring: `ephemera mount --transport uring` really serves through the rings (the
// ready line says so), a data + metadata workload comes out intact with every request answered,
// a killed daemon leaves ENOTCONN rather than a hang, and the fallbacks say what they did.
import { spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDir, REPO, skipLoudly } from '../support/mount';
import { expectCleanProtocol, protocolCounters } from '../support/protocol';

const CLI = path.join(REPO, 'bin', 'ephemera.js');
const ENABLE = '/sys/module/fuse/parameters/enable_uring';

function readEnable(): string | null {
  try {
    return fs.readFileSync(ENABLE, 'utf8').trim();
  } catch {
    return null;
  }
}
function writeEnable(v: 'Y' | 'N'): boolean {
  try {
    fs.writeFileSync(ENABLE, v);
    return readEnable() === v;
  } catch {
    return false;
  }
}

// Decided at collection time so the skip is visible: the kernel must have the parameter and we
// must be allowed to turn it on (root).
const originalEnable = readEnable();
const uringReason = (() => {
  if (originalEnable === null) return `${ENABLE} is missing: this kernel has no FUSE over io_uring`;
  if (originalEnable !== 'Y' && !writeEnable('Y')) return `cannot set ${ENABLE} to Y (not root?)`;
  return null;
})();
const skip = skipLoudly('FUSE over io_uring') || uringReason !== null;
if (uringReason) process.stderr.write(`\n*** SKIPPING FUSE over io_uring: ${uringReason} ***\n\n`);

interface Daemon {
  dir: string;
  ready: Record<string, unknown>;
  pid: number;
  /** Resolves once the daemon process is reaped (every /dev/fuse fd it held is released). */
  exited: Promise<void>;
  stop(): Promise<Record<string, unknown>>;
  teardown(): Promise<void>;
}

/** `ephemera mount DIR --json ...args` in a child bounded by `timeout -s KILL`; resolves on ready. */
async function startDaemon(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Daemon> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-uring-'));
  const dir = path.join(base, 'mnt');
  fs.mkdirSync(dir);
  const child = spawn('timeout', ['-s', 'KILL', '120', process.execPath, CLI, 'mount', dir, '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const events: Record<string, unknown>[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (l) => events.push(JSON.parse(l) as Record<string, unknown>));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const next = async (event: string, ms: number) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const e = events.find((x) => x.event === event);
      if (e) return e;
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        throw new Error(`no "${event}" from ephemera mount (exit ${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  let done = false;
  const teardown = async () => {
    if (done) return;
    done = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
    cleanupDir(dir);
    fs.rmSync(base, { recursive: true, force: true });
    const stopped = events.find((e) => e.event === 'stopped');
    if (stopped) expectCleanProtocol(protocolCounters(stopped), `ephemera mount ${dir} ${args.join(' ')}`);
  };
  let ready: Record<string, unknown>;
  try {
    ready = await next('ready', 20_000);
  } catch (e) {
    await teardown();
    throw e;
  }
  return {
    dir,
    ready,
    pid: Number(ready.pid),
    exited,
    async stop() {
      child.kill('SIGTERM');
      const stopped = await next('stopped', 10_000);
      await exited;
      return stopped;
    },
    teardown,
  };
}

describe.skipIf(skip)('FUSE over io_uring', () => {
  const daemons: Daemon[] = [];
  beforeAll(() => {
    expect(writeEnable('Y')).toBe(true);
  });
  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.teardown();
    writeEnable('Y');
  });
  afterAll(() => {
    if (originalEnable === 'N') writeEnable('N');
  });

  it('--transport uring serves a data + metadata workload over the rings, every request answered', async () => {
    const d = await startDaemon(['--transport', 'uring']);
    daemons.push(d);
    expect(d.ready.transport).toBe('uring');
    expect(d.ready.mode).toBe('passthrough');
    const data = crypto.randomBytes(8 << 20);
    fs.writeFileSync(path.join(d.dir, 'big.bin'), data);
    expect(fs.readFileSync(path.join(d.dir, 'big.bin')).equals(data)).toBe(true);
    fs.mkdirSync(path.join(d.dir, 'dir'));
    const n = 400;
    for (let i = 0; i < n; i++) fs.writeFileSync(path.join(d.dir, 'dir', `f${i}`), `file ${i}\n`);
    expect(fs.readdirSync(path.join(d.dir, 'dir')).length).toBe(n);
    for (let i = 0; i < n; i += 2) fs.renameSync(path.join(d.dir, 'dir', `f${i}`), path.join(d.dir, `moved${i}`));
    fs.symlinkSync('big.bin', path.join(d.dir, 'link'));
    expect(fs.readlinkSync(path.join(d.dir, 'link'))).toBe('big.bin');
    expect(fs.statSync(path.join(d.dir, 'link')).size).toBe(8 << 20);
    for (let i = 0; i < n; i++) {
      const p = i % 2 === 0 ? path.join(d.dir, `moved${i}`) : path.join(d.dir, 'dir', `f${i}`);
      expect(fs.readFileSync(p, 'utf8')).toBe(`file ${i}\n`);
      fs.unlinkSync(p);
    }
    fs.rmdirSync(path.join(d.dir, 'dir'));
    expect(fs.readdirSync(d.dir).sort()).toEqual(['big.bin', 'link']);
    // Writes that do not go through passthrough (truncate, utimes) are answered too.
    fs.truncateSync(path.join(d.dir, 'big.bin'), 4096);
    expect(fs.statSync(path.join(d.dir, 'big.bin')).size).toBe(4096);
    const stopped = await d.stop();
    const counters = stopped.counters as Record<string, number>;
    expect(counters.CREATE).toBeGreaterThanOrEqual(n + 1);
    expect(counters.UNLINK).toBe(n);
    expect(counters.RENAME ?? counters.RENAME2).toBe(n / 2);
    expect(stopped.unanswered).toBe(0);
    expect(stopped.exceptions).toBe(0);
  });

  it('a killed daemon: the workload and new opens fail with ENOTCONN, nothing hangs', async () => {
    const d = await startDaemon(['--transport', 'uring']);
    daemons.push(d);
    expect(d.ready.transport).toBe('uring');
    const writer = spawn('sh', ['-c', `i=0; while :; do echo $i > ${d.dir}/f$((i % 50)) && rm -f ${d.dir}/g$((i % 7)) || exit 3; i=$((i+1)); done`], {
      stdio: 'ignore',
    });
    await new Promise((r) => setTimeout(r, 300));
    process.kill(d.pid, 'SIGKILL');
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        writer.kill('SIGKILL');
        resolve(-1); // hung on the dead mount: fails below
      }, 10_000);
      writer.on('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect(code).toBe(3);
    // Until the dying daemon is reaped a queued request can still end ECONNABORTED; after it, the
    // connection is plainly gone.
    await d.exited;
    // In a child under a hard timeout: if the open hung, the test worker itself would hang.
    const probe = spawnSync('timeout', ['-s', 'KILL', '10', process.execPath, '-e', `
      try { require('fs').openSync(${JSON.stringify(path.join(d.dir, 'new'))}, 'w'); console.log('opened'); }
      catch (e) { console.log(e.code); }`], { encoding: 'utf8' });
    expect(probe.stdout.trim()).toBe('ENOTCONN');
  });

  it('--transport device keeps the /dev/fuse loops; a bad value is refused with E_BAD_OPTION', async () => {
    const d = await startDaemon(['--transport', 'device']);
    daemons.push(d);
    expect(d.ready.transport).toBe('device');
    fs.writeFileSync(path.join(d.dir, 'x'), 'x');
    expect(fs.readFileSync(path.join(d.dir, 'x'), 'utf8')).toBe('x');
    const bad = spawnSync('timeout', ['-s', 'KILL', '20', process.execPath, CLI, 'mount', d.dir, '--transport', 'ring'], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('E_BAD_OPTION');
  });

  it('EPHEMERA_TRANSPORT picks the default; auto keeps the /dev/fuse loops; with io_uring disabled, uring refuses to mount', async () => {
    const viaEnv = await startDaemon([], { ...process.env, EPHEMERA_TRANSPORT: 'uring' });
    daemons.push(viaEnv);
    expect(viaEnv.ready.transport).toBe('uring');
    await viaEnv.teardown();
    expect(writeEnable('N')).toBe(true);
    const auto = await startDaemon(['--transport', 'auto']);
    daemons.push(auto);
    expect(auto.ready.transport).toBe('device'); // auto never picks io_uring (see transport.cc)
    fs.writeFileSync(path.join(auto.dir, 'y'), 'y');
    expect(fs.readFileSync(path.join(auto.dir, 'y'), 'utf8')).toBe('y');
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-uring-'));
    try {
      const r = spawnSync('timeout', ['-s', 'KILL', '20', process.execPath, CLI, 'mount', base, '--transport', 'uring'], { encoding: 'utf8' });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('E_MOUNT');
      expect(r.stderr).toContain('io_uring');
    } finally {
      cleanupDir(base);
      fs.rmSync(base, { recursive: true, force: true });
    }
  });
});
