// Issue 14, first slice: `ephemera mount DIR --restartable` survives a SIGKILL of the process that
// serves it. A holder keeps the /dev/fuse files, the same command run again takes the connection
// over from the journal, and a process looping on the mount meanwhile sees no error.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { SizedDiskTier } from '../../fusefs/daemon/disk-tier';
import { isMountPoint, MEMORY_TIER_ROOT } from '../../fusefs/memtier';
import { restartPaths } from '../../fusefs/restart';
import { REPO, skipLoudly } from '../support/mount';
import { alive, exitedWithin, stopDaemon } from '../support/processes';
import { expectCleanProtocol, protocolCounters } from '../support/protocol';

const CLI = path.join(REPO, 'bin', 'ephemera.js');
const skip = skipLoudly('restartable mounts (issue 14)') || !fs.existsSync(path.join(REPO, 'fuse-store', 'build', 'ephemera-holder'));

interface Daemon {
  pid: number;
  child: ChildProcess;
  events: Record<string, unknown>[];
  next(event: string, timeoutMs: number, after?: number): Promise<Record<string, unknown>>;
  exited: Promise<void>;
  stderr(): string;
}

/** Every daemon this file started: a stopped one's protocol counters are checked at teardown. */
const started: Daemon[] = [];

/** `node bin/ephemera.js mount …` with no wrapper: its pid is the process that really serves. */
async function startDaemon(args: string[], env: Record<string, string> = {}): Promise<Daemon> {
  const child = spawn(process.execPath, [CLI, 'mount', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const events: Record<string, unknown>[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (l) => {
    try {
      events.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      events.push({ event: 'text', line: l });
    }
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  // 'exit' can come before the pipes are drained: the last lines and stderr arrive with 'close'.
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const next = async (event: string, timeoutMs: number, after = 0) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = events.slice(after).find((e) => e.event === event);
      if (found) return found;
      if (child.exitCode !== null || child.signalCode !== null) {
        await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
        throw new Error(`ephemera mount exited (${child.exitCode ?? child.signalCode}) before "${event}": ${stderr.trim()} events: ${JSON.stringify(events)}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for "${event}": ${stderr.trim()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const d: Daemon = { pid: child.pid!, child, events, next, exited, stderr: () => stderr };
  started.push(d);
  const ready = await next('ready', 20_000);
  d.pid = Number(ready.pid);
  return d;
}

/** The per-opcode counts the daemon prints on SIGUSR2. */
async function counters(d: Daemon): Promise<Record<string, unknown>> {
  const after = d.events.length;
  process.kill(d.pid, 'SIGUSR2');
  return d.next('counters', 5000, after);
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

describe.skipIf(skip)('a restartable mount survives a killed daemon', () => {
  const cleanups: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch {
        /* best effort: every step runs */
      }
    }
    // Killed daemons print nothing; every one that stopped (SIGTERM) answered each request once.
    for (const d of started.splice(0)) {
      const stopped = d.events.find((e) => e.event === 'stopped');
      if (stopped) expectCleanProtocol(protocolCounters(stopped), `ephemera mount (pid ${d.pid})`);
    }
  });

  /** A fresh mount point, and the cleanup that leaves nothing behind whatever state it is in. */
  function setup(): { base: string; mnt: string; spill: string } {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-restart-'));
    const mnt = path.join(base, 'mnt');
    const spill = path.join(base, 'spill');
    fs.mkdirSync(mnt);
    fs.mkdirSync(spill);
    const paths = restartPaths(mnt);
    cleanups.push(() => {
      // The holder this test's daemons started (its pid file), then every mount, then the dirs.
      try {
        const pid = Number(fs.readFileSync(paths.pidFile, 'utf8'));
        if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        /* no holder left */
      }
      for (const m of [mnt, paths.memoryDir, path.join(base, 'beside')]) {
        for (let i = 0; i < 4 && isMountPoint(m); i++) execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      }
      fs.rmSync(paths.dir, { recursive: true, force: true });
      fs.rmSync(base, { recursive: true, force: true });
    });
    return { base, mnt, spill };
  }

  it('SIGKILL mid-loop, same command again: 0 errors, every byte intact, ops served before and after', async () => {
    const { base, mnt, spill } = setup();
    const args = [mnt, '--restartable', '--holder-timeout', '10', '--spill-dir', spill];
    const first = await startDaemon(args);
    cleanups.push(() => {
      if (alive(first.pid)) process.kill(first.pid, 'SIGKILL');
    });
    expect(first.events[0]).toMatchObject({ takeover: false, mode: 'passthrough' });

    // A file written before the kill: its bytes, and its tier (its backing file in the memory tier's store).
    const keep = path.join(mnt, 'keep');
    fs.writeFileSync(keep, crypto.randomBytes(32 << 20));
    const keepSum = sha256(keep);
    const paths = restartPaths(mnt);
    const store = String((first.events[0]!.restart as Record<string, unknown>).store);
    const holderPid = Number(fs.readFileSync(paths.pidFile, 'utf8'));
    const backing = () => fs.readdirSync(path.join(paths.memoryDir, store)).filter((n) => n.startsWith(`${fs.statSync(keep).ino}.`));
    expect(backing()).toHaveLength(1);

    const stopFile = path.join(base, 'stop');
    const outFile = path.join(base, 'loop.json');
    const loop = spawn(process.execPath, [path.join(__dirname, 'loop-worker.js'), mnt, stopFile, outFile], { stdio: 'inherit' });
    const loopDone = new Promise<void>((resolve) => loop.on('exit', () => resolve()));
    cleanups.push(() => {
      if (loop.exitCode === null) loop.kill('SIGKILL');
    });
    await new Promise((r) => setTimeout(r, 1500));
    const before = (await counters(first)).counters as Record<string, number>;
    for (const op of ['CREATE', 'OPEN', 'RENAME', 'UNLINK']) expect(before[op], op).toBeGreaterThan(0);

    // Handles the kernel keeps across the kill: one on `keep` (its passthrough backing id lives in
    // the connection: a second open after the takeover must reuse it, a new id would be EIO), and
    // one on a file unlinked while open.
    const keepFd = fs.openSync(keep, 'r');
    const ghost = path.join(mnt, 'ghost');
    const ghostFd = fs.openSync(ghost, 'w+');
    fs.writeSync(ghostFd, 'still here', 0);
    fs.unlinkSync(ghost);
    const killedAt = Date.now();
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    expect(alive(first.pid)).toBe(false);
    // Callers wait in the kernel meanwhile (the holder keeps the connection). A store started
    // beside the dead one sweeps dead daemons' directories, but not one a holder keeps.
    const beside = path.join(base, 'beside');
    fs.mkdirSync(beside);
    const other = await startDaemon([beside, '--spill-dir', spill]);
    cleanups.push(() => {
      if (alive(other.pid)) process.kill(other.pid, 'SIGKILL');
    });
    expect(fs.readdirSync(spill)).toContain(store);
    other.child.kill('SIGTERM');
    await other.next('stopped', 10_000);
    await other.exited;
    expect(isMountPoint(beside)).toBe(false);

    const spawnedAt = Date.now();
    const second = await startDaemon(args);
    cleanups.push(() => stopDaemon(second));
    const readyAt = Date.now();
    expect(second.events[0]).toMatchObject({ takeover: true, mode: 'passthrough' });
    // What INIT agreed comes from the journal (no second INIT): the same protocol and flags.
    for (const k of ['protoMinor', 'killprivV2']) expect(second.events[0]![k], k).toBe(first.events[0]![k]);
    await new Promise((r) => setTimeout(r, 1500));
    const again = fs.openSync(keep, 'r');
    const head = Buffer.alloc(4096);
    fs.readSync(again, head, 0, 4096, 0);
    fs.closeSync(again);
    const viaOld = Buffer.alloc(4096);
    fs.readSync(keepFd, viaOld, 0, 4096, 0);
    expect(viaOld.equals(head)).toBe(true);
    fs.closeSync(keepFd);
    const ghostBack = Buffer.alloc(10);
    fs.readSync(ghostFd, ghostBack, 0, 10, 0);
    expect(ghostBack.toString()).toBe('still here');
    fs.closeSync(ghostFd);
    expect(fs.existsSync(ghost)).toBe(false);
    const after = await counters(second);
    const ops = after.counters as Record<string, number>;
    for (const op of ['CREATE', 'OPEN', 'RENAME', 'UNLINK']) expect(ops[op], op).toBeGreaterThan(0);

    fs.writeFileSync(stopFile, '');
    const timer = setTimeout(() => loop.kill('SIGKILL'), 20_000);
    await loopDone;
    clearTimeout(timer);
    const result = JSON.parse(fs.readFileSync(outFile, 'utf8')) as { iterations: number; errors: string[]; maxStallMs: number; stallStartMs: number; bytesChecked: number };
    expect(result.errors).toEqual([]);
    expect(result.iterations).toBeGreaterThan(100);
    expect(sha256(keep)).toBe(keepSum);
    expect(backing()).toHaveLength(1);

    const restart = after.restart as Record<string, number>;
    const firstRequestMs = Number(restart.firstRequestMs);
    expect(firstRequestMs).toBeGreaterThan(0);
    // The takeover starts before the CLI's modules load (bin/ephemera.js): callers are served
    // before the successor can even print its ready line.
    expect(firstRequestMs).toBeLessThanOrEqual(readyAt);
    process.stderr.write(
      `restart: ${result.iterations} iterations, ${result.bytesChecked} bytes checked, 0 errors; ` +
        `successor spawn → ready ${readyAt - spawnedAt} ms (journal loaded in ${(second.events[0]!.restart as Record<string, number> | undefined)?.loadUs ?? '?'} µs), ` +
        `spawn → first answered request ${firstRequestMs - spawnedAt} ms; the caller's longest stall ${result.maxStallMs} ms ` +
        `(kill → successor spawn ${spawnedAt - killedAt} ms); resent requests: ${restart.repliesReplayed} answered from the journal, ${restart.resendsApplied} applied; ` +
        `ops before: ${JSON.stringify(before)} after: ${JSON.stringify(ops)}\n`,
    );

    // A clean stop releases the holder and leaves no state behind.
    second.child.kill('SIGTERM');
    await second.next('stopped', 10_000);
    await second.exited;
    expect(await exitedWithin(holderPid, 3000)).toBe(true);
    expect(fs.existsSync(paths.dir)).toBe(false);
    expect(isMountPoint(mnt)).toBe(false);
    expect(isMountPoint(paths.memoryDir)).toBe(false);
  }, 90_000);

  it('an upgrade: SIGUSR1 hands a --size mount over (nothing left to resend), the next run takes it, its sized tiers and quota over; 0 errors in the loop', async () => {
    const { base, mnt, spill } = setup();
    const paths = restartPaths(mnt);
    const sizedMemory = `${MEMORY_TIER_ROOT}/held-mem-${path.basename(paths.dir)}`;
    cleanups.unshift(() => {
      // Last, after the setup's cleanup (cleanups run in reverse): the tiers the CLI made.
      for (let i = 0; i < 4 && isMountPoint(sizedMemory); i++) execFileSync('umount', ['-l', sizedMemory], { stdio: 'ignore' });
      fs.rmSync(sizedMemory, { recursive: true, force: true });
      SizedDiskTier.remove(spill);
    });
    const args = [mnt, '--restartable', '--holder-timeout', '10', '--spill-dir', spill, '--size', '64M'];
    const first = await startDaemon(args);
    cleanups.push(() => {
      if (alive(first.pid)) process.kill(first.pid, 'SIGKILL');
    });
    expect(first.events[0]).toMatchObject({ takeover: false });
    const size = () => {
      const st = fs.statfsSync(mnt);
      return st.blocks * st.bsize;
    };
    expect(size()).toBe(64 << 20);
    expect(isMountPoint(sizedMemory)).toBe(true);
    const keep = path.join(mnt, 'keep');
    fs.writeFileSync(keep, crypto.randomBytes(24 << 20));
    const keepSum = sha256(keep);
    const store = String((first.events[0]!.restart as Record<string, unknown>).store);
    const inMemory = () => fs.readdirSync(path.join(sizedMemory, store)).filter((n) => n.startsWith(`${fs.statSync(keep).ino}.`));
    expect(inMemory()).toHaveLength(1);
    const holderPid = Number(fs.readFileSync(paths.pidFile, 'utf8'));

    const stopFile = path.join(base, 'stop');
    const outFile = path.join(base, 'loop.json');
    const loop = spawn(process.execPath, [path.join(__dirname, 'loop-worker.js'), mnt, stopFile, outFile], { stdio: 'inherit' });
    const loopDone = new Promise<void>((resolve) => loop.on('exit', () => resolve()));
    cleanups.push(() => {
      if (loop.exitCode === null) loop.kill('SIGKILL');
    });
    await new Promise((r) => setTimeout(r, 1000));

    const signalledAt = Date.now();
    process.kill(first.pid, 'SIGUSR1');
    const handed = await first.next('handed-over', 10_000);
    await first.exited;
    const exitedAt = Date.now();
    expect(first.child.exitCode).toBe(0);
    expect(alive(first.pid)).toBe(false);
    expect(handed.unanswered).toBe(0);
    // Left to the holder: the mount, its connection, both tiers.
    expect(alive(holderPid)).toBe(true);
    expect(isMountPoint(mnt)).toBe(true);
    expect(isMountPoint(sizedMemory)).toBe(true);

    const second = await startDaemon(args);
    cleanups.push(() => stopDaemon(second));
    const readyAt = Date.now();
    expect(second.events[0]).toMatchObject({ takeover: true });
    const restart = second.events[0]!.restart as Record<string, number>;
    // Every request the first run had read it answered before it let go: nothing to resend.
    expect(restart.resendsApplied).toBe(0);
    expect(restart.repliesReplayed).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    fs.writeFileSync(stopFile, '');
    const timer = setTimeout(() => loop.kill('SIGKILL'), 20_000);
    await loopDone;
    clearTimeout(timer);
    const result = JSON.parse(fs.readFileSync(outFile, 'utf8')) as { iterations: number; errors: string[]; maxStallMs: number };
    expect(result.errors).toEqual([]);
    expect(result.iterations).toBeGreaterThan(100);
    expect(sha256(keep)).toBe(keepSum);
    expect(inMemory()).toHaveLength(1);
    // The quota came along: 64 MiB, and a file that would pass it is refused.
    expect(size()).toBe(64 << 20);
    let refused = '';
    try {
      fs.writeFileSync(path.join(mnt, 'over'), Buffer.alloc(48 << 20, 1));
    } catch (e) {
      refused = (e as NodeJS.ErrnoException).code ?? String(e);
    }
    expect(refused).toBe('ENOSPC');
    fs.rmSync(path.join(mnt, 'over'), { force: true });
    process.stderr.write(
      `upgrade: SIGUSR1 → exited ${exitedAt - signalledAt} ms, next run ready ${readyAt - exitedAt} ms later; loop ${result.iterations} iterations, 0 errors, ` +
        `longest stall ${result.maxStallMs} ms; resent ${restart.resendsApplied}, replayed ${restart.repliesReplayed}\n`,
    );

    second.child.kill('SIGTERM');
    await second.next('stopped', 10_000);
    await second.exited;
    expect(await exitedWithin(holderPid, 3000)).toBe(true);
    expect(isMountPoint(mnt)).toBe(false);
    expect(isMountPoint(sizedMemory)).toBe(false);
    expect(isMountPoint(SizedDiskTier.dirFor(spill))).toBe(false);
  }, 90_000);

  it('SIGUSR1 to a mount that is not --restartable is ignored, and it keeps serving', async () => {
    const { mnt } = setup();
    const d = await startDaemon([mnt]);
    cleanups.push(() => {
      if (alive(d.pid)) process.kill(d.pid, 'SIGKILL');
    });
    process.kill(d.pid, 'SIGUSR1');
    await new Promise((r) => setTimeout(r, 300));
    expect(alive(d.pid)).toBe(true);
    fs.writeFileSync(path.join(mnt, 'f'), 'still served');
    expect(fs.readFileSync(path.join(mnt, 'f'), 'utf8')).toBe('still served');
    expect(d.stderr()).toContain('not --restartable');
    d.child.kill('SIGTERM');
    await d.next('stopped', 10_000);
    await d.exited;
    expect(isMountPoint(mnt)).toBe(false);
  });

  it('no successor: the holder aborts the connection after its timeout (ENOTCONN), and says why', async () => {
    const { mnt } = setup();
    const d = await startDaemon([mnt, '--restartable', '--holder-timeout', '2']);
    fs.writeFileSync(path.join(mnt, 'before'), 'x');
    const paths = restartPaths(mnt);
    const holderPid = Number(fs.readFileSync(paths.pidFile, 'utf8'));
    process.kill(d.pid, 'SIGKILL');
    await d.exited;
    const t0 = Date.now();
    // A caller needing the daemon waits (in a child: a blocked syscall must not block this worker).
    const probe = spawn(
      process.execPath,
      ['-e', `const fs=require('fs');let a,b;try{fs.writeFileSync(${JSON.stringify(path.join(mnt, 'new'))},'y')}catch(e){a=e.code}try{fs.readFileSync(${JSON.stringify(path.join(mnt, 'before'))})}catch(e){b=e.code}console.log(JSON.stringify({a,b}))`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    probe.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const killer = setTimeout(() => probe.kill('SIGKILL'), 15_000);
    await new Promise<void>((resolve) => probe.on('close', () => resolve()));
    clearTimeout(killer);
    const waited = Date.now() - t0;
    const codes = JSON.parse(out) as { a: string; b: string };
    expect(['ENOTCONN', 'ECONNABORTED']).toContain(codes.a);
    expect(codes.b).toBe('ENOTCONN');
    expect(waited).toBeGreaterThanOrEqual(1500);
    expect(waited).toBeLessThan(6000);
    expect(await exitedWithin(holderPid, 3000)).toBe(true);
    expect(fs.readFileSync(paths.log, 'utf8')).toMatch(/no successor took over within 2 s; closing \d+ fds/);
    process.stderr.write(`restart: no successor → the caller got ${codes.a} after ${waited} ms (holder timeout 2 s)\n`);
  }, 60_000);

  // The non-idempotent requests, killed at the two points that matter (a test-only stop point in
  // the daemon, EPHEMERA_TEST_STOP): after the request is read but before it is applied (the
  // successor applies the resent request), and after it is applied and journaled but before the
  // reply (the successor answers the resent request from the journal). Either way the caller sees
  // one success: a second CREATE O_EXCL, MKDIR or LINK would be EEXIST, a second RENAME or UNLINK
  // ENOENT; and the table holds exactly the entries and inodes one application leaves.
  const cases: { op: string; setup: string[]; probe: string; names: string[]; inodeDelta: number }[] = [
    { op: 'CREATE', setup: [], probe: `fs.writeFileSync(p('n'), 'new', { flag: 'wx' })`, names: ['n'], inodeDelta: 1 },
    { op: 'MKDIR', setup: [], probe: `fs.mkdirSync(p('d'))`, names: ['d'], inodeDelta: 1 },
    { op: 'UNLINK', setup: ['a'], probe: `fs.unlinkSync(p('a'))`, names: [], inodeDelta: -1 },
    { op: 'RENAME', setup: ['a'], probe: `fs.renameSync(p('a'), p('b'))`, names: ['b'], inodeDelta: 0 },
    { op: 'LINK', setup: ['a'], probe: `fs.linkSync(p('a'), p('l'))`, names: ['a', 'l'], inodeDelta: 1 },
  ];
  for (const point of ['read', 'applied'] as const) {
    for (const c of cases) {
      it(`killed after ${c.op} is ${point === 'read' ? 'read, before it is applied' : 'applied, before its reply'}: applied once`, async () => {
        const { mnt } = setup();
        const args = [mnt, '--restartable', '--holder-timeout', '10'];
        const first = await startDaemon(args, { EPHEMERA_TEST_STOP: `${point}:${c.op}` });
        cleanups.push(() => {
          if (alive(first.pid)) process.kill(first.pid, 'SIGKILL');
        });
        for (const n of c.setup) fs.writeFileSync(path.join(mnt, n), `content of ${n}`);
        const used = () => {
          const st = fs.statfsSync(mnt);
          return st.files - st.ffree;
        };
        const usedBefore = used();
        const probe = spawn(
          process.execPath,
          ['-e', `const fs=require('fs'),path=require('path');const p=(n)=>path.join(${JSON.stringify(mnt)},n);try{${c.probe};console.log('{"ok":true}')}catch(e){console.log(JSON.stringify({ok:false,code:e.code}))}`],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
        let out = '';
        probe.stdout!.on('data', (b: Buffer) => (out += b.toString()));
        const probeDone = new Promise<void>((resolve) => probe.on('close', () => resolve()));
        const killer = setTimeout(() => probe.kill('SIGKILL'), 20_000);
        cleanups.push(() => {
          clearTimeout(killer);
          if (probe.exitCode === null) probe.kill('SIGKILL');
        });
        // The stop point kills the daemon at the probe's request.
        const t = setTimeout(() => first.child.kill('SIGKILL'), 10_000);
        await first.exited;
        clearTimeout(t);
        expect(first.child.signalCode).toBe('SIGKILL');
        expect(probe.exitCode).toBe(null); // still waiting in the kernel
        const second = await startDaemon(args);
        cleanups.push(() => stopDaemon(second));
        await probeDone;
        expect(JSON.parse(out)).toEqual({ ok: true });
        expect(fs.readdirSync(mnt).sort()).toEqual(c.names);
        for (const n of c.names) {
          if (c.op === 'MKDIR') expect(fs.statSync(path.join(mnt, n)).isDirectory()).toBe(true);
          else expect(fs.readFileSync(path.join(mnt, n), 'utf8')).toBe(c.op === 'CREATE' ? 'new' : 'content of a');
        }
        // No leaked inode: the count one application leaves (FORGETs are asynchronous: wait a little).
        const deadline = Date.now() + 3000;
        while (used() !== usedBefore + c.inodeDelta && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        expect(used()).toBe(usedBefore + c.inodeDelta);
        const info = (await counters(second)).restart as Record<string, number>;
        if (point === 'read') expect(info.resendsApplied).toBeGreaterThanOrEqual(1);
        else expect(info.repliesReplayed).toBeGreaterThanOrEqual(1);
      }, 60_000);
    }
  }

  /** A child that renames a → b on the mount and prints the outcome (a blocked call must not block this worker). */
  function renameProbe(mnt: string): { done: Promise<{ ok: boolean; code?: string }>; child: ChildProcess } {
    const child = spawn(
      process.execPath,
      ['-e', `const fs=require('fs');try{fs.renameSync(${JSON.stringify(path.join(mnt, 'a'))},${JSON.stringify(path.join(mnt, 'b'))});console.log('{"ok":true}')}catch(e){console.log(JSON.stringify({ok:false,code:e.code}))}`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const done = new Promise<{ ok: boolean; code?: string }>((resolve) =>
      child.on('exit', () => {
        clearTimeout(killer);
        resolve(out ? (JSON.parse(out) as { ok: boolean; code?: string }) : { ok: false, code: 'probe killed' });
      }),
    );
    return { done, child };
  }

  it('a request that kills every successor: after 3 successors died on it, the 4th answers EIO and keeps serving', async () => {
    const { mnt } = setup();
    const args = [mnt, '--restartable', '--holder-timeout', '10'];
    // Every daemon here dies on reading a RENAME (the stop point), like a request that crashes the code.
    const crashing = { EPHEMERA_TEST_STOP: 'read:RENAME' };
    const first = await startDaemon(args, crashing);
    fs.writeFileSync(path.join(mnt, 'a'), 'content of a');
    const probe = renameProbe(mnt);
    cleanups.push(() => {
      if (probe.child.exitCode === null) probe.child.kill('SIGKILL');
    });
    await first.exited;
    const died: number[] = [];
    for (let i = 0; i < 3; i++) {
      // Each dies on the resent RENAME, before it can even say ready.
      const d = spawn(process.execPath, [CLI, 'mount', ...args, '--json'], { stdio: 'ignore', env: { ...process.env, ...crashing } });
      const exited = new Promise<void>((resolve) => d.on('exit', () => resolve()));
      cleanups.push(() => {
        if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL');
      });
      const t = setTimeout(() => d.kill('SIGTERM'), 10_000);
      await exited;
      clearTimeout(t);
      died.push(d.signalCode === 'SIGKILL' ? 1 : 0);
    }
    expect(died).toEqual([1, 1, 1]);
    const fourth = await startDaemon(args, crashing);
    cleanups.push(() => stopDaemon(fourth));
    expect(await probe.done).toEqual({ ok: false, code: 'EIO' });
    expect(fs.readFileSync(path.join(mnt, 'a'), 'utf8')).toBe('content of a'); // still served, nothing lost
    const info = (await counters(fourth)).restart as Record<string, number>;
    expect(info.resendsRefused).toBe(1);
  }, 90_000);

  it('a journal of another state version: a clear refusal naming the version, then the holder’s bounded abort (never a hang)', async () => {
    const { mnt } = setup();
    const args = [mnt, '--restartable', '--holder-timeout', '3'];
    const first = await startDaemon(args);
    fs.writeFileSync(path.join(mnt, 'a'), 'x');
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    // Rewrite the header record's version (the first batch: 12-byte frame, type byte, u32 version) and its CRC.
    const paths = restartPaths(mnt);
    const j = fs.readFileSync(paths.journal);
    const len = j.readUInt32LE(4);
    j.writeUInt32LE(99, 13);
    j.writeUInt32LE(zlib.crc32(j.subarray(12, 12 + len)), 8);
    fs.writeFileSync(paths.journal, j);
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [CLI, 'mount', ...args, '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('E_STATE_VERSION');
    expect(r.stderr).toContain('state version 99; this build reads version 1');
    // The holder still keeps the connection for a successor that can read it, up to its timeout.
    const probe = spawnSync(process.execPath, ['-e', `try{require('fs').readFileSync(${JSON.stringify(path.join(mnt, 'a'))})}catch(e){console.log(e.code)}`], { encoding: 'utf8', timeout: 20_000 });
    expect(['ENOTCONN', 'ECONNABORTED']).toContain(probe.stdout.trim());
    expect(Date.now() - t0).toBeLessThan(10_000);
  }, 60_000);

  it('a refused takeover leaves everything for the next successor: the build that reads the journal takes over', async () => {
    const { mnt } = setup();
    const args = [mnt, '--restartable', '--holder-timeout', '10'];
    const first = await startDaemon(args);
    fs.writeFileSync(path.join(mnt, 'a'), 'x');
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    const paths = restartPaths(mnt);
    const original = fs.readFileSync(paths.journal);
    const j = Buffer.from(original);
    j.writeUInt32LE(99, 13);
    j.writeUInt32LE(zlib.crc32(j.subarray(12, 12 + j.readUInt32LE(4))), 8);
    fs.writeFileSync(paths.journal, j);
    const r = spawnSync(process.execPath, [CLI, 'mount', ...args, '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.stderr).toContain('E_STATE_VERSION');
    fs.writeFileSync(paths.journal, original); // the rollback: a build that reads version 1
    const second = await startDaemon(args);
    cleanups.push(() => stopDaemon(second));
    expect(second.events[0]).toMatchObject({ takeover: true });
    expect(fs.readFileSync(path.join(mnt, 'a'), 'utf8')).toBe('x');
  }, 60_000);
});
