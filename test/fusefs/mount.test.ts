// `ephemera mount` as a user meets it: refusals, readiness, a killed daemon, and the claim that
// under passthrough no data byte goes through the daemon.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { listMountPoints } from '../../fusefs/memtier';
import { cleanupDir, REPO, skipLoudly, startMount, teardownAll, type TestMount } from '../support/mount';

const CLI = path.join(REPO, 'bin', 'ephemera.js');
const skip = skipLoudly('ephemera mount lifecycle');

function runCli(args: string[]) {
  return spawnSync('timeout', ['-s', 'KILL', '20', process.execPath, CLI, ...args], { encoding: 'utf8' });
}

describe.skipIf(skip)('ephemera mount', () => {
  const mounts: TestMount[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    try {
      await teardownAll(mounts);
    } finally {
      for (const d of dirs.splice(0)) {
        cleanupDir(d);
        fs.rmSync(d, { recursive: true, force: true });
      }
    }
  });
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-mt-'));
    dirs.push(d);
    return d;
  };

  it('refuses clearly: missing mount point, a file, a busy mount point (exit != 0, one line, stable code)', () => {
    const base = tmp();
    const missing = runCli(['mount', path.join(base, 'nope')]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toContain('E_NO_MOUNTPOINT');
    fs.writeFileSync(path.join(base, 'file'), '');
    expect(runCli(['mount', path.join(base, 'file')]).stderr).toContain('E_NOT_DIRECTORY');
    const busy = path.join(base, 'busy');
    fs.mkdirSync(busy);
    execFileSync('mount', ['-t', 'tmpfs', 'x', busy]);
    try {
      const r = runCli(['mount', busy]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('E_MOUNTPOINT_BUSY');
    } finally {
      execFileSync('umount', [busy]);
    }
    expect(runCli(['mount', base, '--queues', 'x']).stderr).toContain('E_BAD_OPTION');
    // No /dev/fuse (a private /dev in a mount namespace), and no CAP_SYS_ADMIN (dropped from the bounding set).
    const target = path.join(base, 'ok');
    fs.mkdirSync(target);
    const noFuse = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev && exec "${process.execPath}" "${CLI}" mount "${target}"`], { encoding: 'utf8', timeout: 30_000 });
    expect(noFuse.status).not.toBe(0);
    expect(noFuse.stderr.trim().split('\n')).toHaveLength(1);
    expect(noFuse.stderr).toContain('E_NO_FUSE');
    const noCap = spawnSync('setpriv', ['--bounding-set=-sys_admin', '--inh-caps=-sys_admin', process.execPath, CLI, 'mount', target], { encoding: 'utf8', timeout: 30_000 });
    expect(noCap.status).not.toBe(0);
    expect(noCap.stderr.trim().split('\n')).toHaveLength(1);
    expect(noCap.stderr).toContain('E_NOT_ROOT');
  });

  it('--size binds both tiers: a file growing while open on the disk tier (--budget 0) gets ENOSPC at the quota', async () => {
    const spill = tmp();
    const m = await startMount({ args: ['--size', '24M', '--budget', '0', '--spill-dir', spill] });
    mounts.push(m);
    expect(fs.readdirSync(spill)).toEqual(expect.arrayContaining(['tier', 'tier.img']));
    const fd = fs.openSync(path.join(m.dir, 'grow'), 'w');
    let written = 0;
    let code: string | undefined;
    try {
      const chunk = Buffer.alloc(1 << 20, 3);
      for (; written < 64 << 20; ) written += fs.writeSync(fd, chunk);
    } catch (e) {
      code = (e as NodeJS.ErrnoException).code;
    } finally {
      fs.closeSync(fd);
    }
    expect(code).toBe('ENOSPC');
    expect(written).toBeGreaterThanOrEqual(16 << 20);
    expect(written).toBeLessThanOrEqual(24 << 20);
    await m.stop();
    mounts.pop();
    expect(fs.readdirSync(spill)).toEqual([]); // its file system unmounted, the image removed
  });

  it('under passthrough the daemon serves no READ or WRITE during a data workload', async () => {
    const m = await startMount();
    mounts.push(m);
    expect(m.mode).toBe('passthrough');
    const data = crypto.randomBytes(16 << 20);
    const file = path.join(m.dir, 'data.bin');
    fs.writeFileSync(file, data);
    for (let i = 0; i < 4; i++) expect(fs.readFileSync(file).equals(data)).toBe(true);
    const fd = fs.openSync(file, 'r+');
    for (let i = 0; i < 2000; i++) fs.writeSync(fd, data.subarray(i * 4096, i * 4096 + 4096), 0, 4096, (i * 7919 * 4096) % (16 << 20));
    fs.closeSync(fd);
    const counters = await m.stop();
    expect(counters.READ ?? 0).toBe(0);
    expect(counters.WRITE ?? 0).toBe(0);
    expect(counters.CREATE).toBeGreaterThan(0);
  });

  it('writeback mode (no passthrough) serves the data itself and keeps it intact', async () => {
    const m = await startMount({ args: ['--mode', 'writeback'] });
    mounts.push(m);
    expect(m.mode).toBe('writeback');
    const data = crypto.randomBytes(8 << 20);
    fs.writeFileSync(path.join(m.dir, 'w.bin'), data);
    execFileSync('sh', ['-c', `echo 3 > /proc/sys/vm/drop_caches`]);
    expect(fs.readFileSync(path.join(m.dir, 'w.bin')).equals(data)).toBe(true);
    const counters = await m.stop();
    expect(counters.WRITE).toBeGreaterThan(0);
  });

  it('a daemon killed mid-work: new opens fail with ENOTCONN, nothing hangs, a restart recovers the mount point', async () => {
    const m = await startMount();
    mounts.push(m);
    const writer = spawn('sh', ['-c', `i=0; while :; do echo $i > ${m.dir}/f$((i % 50)) || exit 3; i=$((i+1)); done`], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    process.kill(m.pid, 'SIGKILL');
    const code = await new Promise<number | null>((resolve) => writer.on('exit', (c) => resolve(c)));
    expect(code).toBe(3); // the writer saw an error instead of hanging
    // The writer can fail while the dying daemon still holds some of its cloned /dev/fuse fds; a
    // request queued in that window ends ECONNABORTED. Once the process is reaped every fd is
    // released and the connection is plainly gone: ENOTCONN, which is what a function sees.
    if (m.process.exitCode === null && m.process.signalCode === null) await new Promise((r) => m.process.once('exit', r));
    let err: NodeJS.ErrnoException | undefined;
    try {
      fs.openSync(path.join(m.dir, 'new'), 'w');
    } catch (e) {
      err = e as NodeJS.ErrnoException;
    }
    expect(err?.code).toBe('ENOTCONN');
    // The dead process's memory-tier tmpfs is still mounted, named after its pid.
    const deadTier = (p: string) => p.startsWith(`/run/ephemera/mem-${m.pid}-`);
    expect(listMountPoints().filter(deadTier)).toHaveLength(1);
    // A new daemon on the same path detaches the dead mount and serves again, and sweeps the dead tier.
    const again = await startMount({ dir: m.dir });
    mounts.push(again);
    expect(listMountPoints().filter(deadTier)).toEqual([]);
    fs.writeFileSync(path.join(again.dir, 'back'), 'ok');
    expect(fs.readFileSync(path.join(again.dir, 'back'), 'utf8')).toBe('ok');
    expect(fs.readdirSync(again.dir)).toEqual(['back']); // a fresh, empty store
  });

  it('many concurrent readers and writers over several queues stay consistent', async () => {
    const m = await startMount({ args: ['--queues', '4'] });
    mounts.push(m);
    const jobs = Array.from({ length: 8 }, (_, j) =>
      new Promise<number | null>((resolve) => {
        const p = spawn('sh', ['-c', `mkdir -p ${m.dir}/d${j} && for i in $(seq 1 150); do echo "$i" > ${m.dir}/d${j}/f$i; cat ${m.dir}/d${j}/f$i > /dev/null; done; ls ${m.dir}/d${j} | wc -l`], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout!.on('data', (d: Buffer) => (out += d));
        // 'close', not 'exit': when 'exit' fires the child's last line may still be unread, which
        // read as a job that listed 0 files (main: 1 run in 60; 5 in 60 with replies written after
        // the daemon's lock; the listing itself was complete when looked at again).
        p.on('close', () => resolve(Number(out.trim())));
      }),
    );
    expect(await Promise.all(jobs)).toEqual(Array(8).fill(150));
    const counters = await m.stop();
    expect(counters.CREATE).toBe(1200);
  });
});
