import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { skipLoudly } from '../support/mount';
import { CLI, cleanupStateDir, makeStateDir, MiB, mountsUnder, startDaemon, type TestDaemon } from './support';

const skip = skipLoudly('node daemon quotas and restart');

/** Writes `bytes` in 1 MiB chunks; returns bytes written before the first error and its code. */
function fill(file: string, bytes: number): { written: number; code: string | null } {
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(MiB, 0x5a);
  let written = 0;
  try {
    while (written < bytes) written += fs.writeSync(fd, chunk, 0, Math.min(MiB, bytes - written));
    fs.fsyncSync(fd);
    return { written, code: null };
  } catch (e) {
    return { written, code: (e as NodeJS.ErrnoException).code ?? 'unknown' };
  } finally {
    fs.closeSync(fd);
  }
}

function df(dir: string): { sizeKiB: number; inodes: number } {
  const size = execFileSync('df', ['--output=size', '-k', dir], { encoding: 'utf8' }).trim().split('\n')[1]!;
  const inodes = execFileSync('df', ['--output=itotal', dir], { encoding: 'utf8' }).trim().split('\n')[1]!;
  return { sizeKiB: Number(size), inodes: Number(inodes) };
}

describe.skipIf(skip)('node daemon: quotas', () => {
  const stateDirs: string[] = [];
  const daemons: TestDaemon[] = [];
  afterAll(async () => {
    for (const d of daemons) await d.stop();
    for (const s of stateDirs) cleanupStateDir(s);
  });

  it('ENOSPC at the size quota (memory and disk tier) and at the inode quota; df shows both; set-quotas changes them', async () => {
    const stateDir = makeStateDir();
    stateDirs.push(stateDir);
    const daemon = await startDaemon(stateDir);
    daemons.push(daemon);
    const client = await daemon.client();
    try {
      const { mount } = await client.addMount({ id: 'q', budget: 8 * MiB, sizeQuota: 32 * MiB, inodeQuota: 50, owner: 't' });
      expect(df(mount.path)).toEqual({ sizeKiB: 32 * 1024, inodes: 50 });
      // Open and growing: the memory tier's own tmpfs (sized to the quota) stops it under passthrough.
      const big = fill(path.join(mount.path, 'big'), 64 * MiB);
      expect(big.code).toBe('ENOSPC');
      expect(big.written).toBeGreaterThan(16 * MiB);
      expect(big.written).toBeLessThanOrEqual(32 * MiB);
      fs.unlinkSync(path.join(mount.path, 'big'));
      await new Promise((r) => setTimeout(r, 100));
      // Past the budget, new files are created on the disk tier; the quota still counts both tiers.
      for (let i = 0; i < 3; i++) expect(fill(path.join(mount.path, `m${i}`), 4 * MiB).code).toBeNull();
      await client.setBudget('q', 4 * MiB);
      const s = await client.stats('q');
      expect(s.bytes.disk).toBeGreaterThan(0);
      expect(s.bytes.memory).toBeLessThanOrEqual(4 * MiB);
      // Open and growing on the disk tier: under passthrough the kernel writes it without asking
      // us, and the tier's own file system (sized to the quota) stops it: 8 MiB spilled + this file.
      expect(s.diskTierBounded).toBe(true);
      const rest = fill(path.join(mount.path, 'rest'), 40 * MiB);
      expect(rest.code).toBe('ENOSPC');
      expect(rest.written).toBeGreaterThanOrEqual(16 * MiB);
      expect(rest.written).toBeLessThanOrEqual(32 * MiB - s.bytes.disk);
      // ext4 refuses a write whole when its large folio does not fit: the last MiB in 4 KiB writes,
      // so the mount is as full as a tmpfs would be after the same program.
      const tail = fs.openSync(path.join(mount.path, 'rest'), 'a');
      try {
        for (;;) fs.writeSync(tail, Buffer.alloc(4096, 1));
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      } finally {
        fs.closeSync(tail);
      }
      await new Promise((r) => setTimeout(r, 50));
      // At the quota across both tiers, within a few blocks (each tier rounds to its page or block,
      // ext4 adds an extent block per file): 64 KiB more does not fit.
      expect(() => fs.writeFileSync(path.join(mount.path, 'one-more'), Buffer.alloc(64 * 1024, 1))).toThrow(/ENOSPC/);
      fs.rmSync(path.join(mount.path, 'one-more'), { force: true }); // created empty, as on tmpfs
      fs.unlinkSync(path.join(mount.path, 'rest'));
      await new Promise((r) => setTimeout(r, 50));
      // Inodes: root + m0..m2 = 4 used of 50.
      let created = 0;
      let code: string | undefined;
      for (; created < 100; created++) {
        try {
          fs.writeFileSync(path.join(mount.path, `n${created}`), '');
        } catch (e) {
          code = (e as NodeJS.ErrnoException).code;
          break;
        }
      }
      expect(code).toBe('ENOSPC');
      expect(created).toBe(46);
      // Raised at run time: df and the limits follow; lowered below use: refused, nothing changes.
      await client.setQuotas('q', { sizeQuota: 48 * MiB, inodeQuota: 60 });
      expect(df(mount.path)).toEqual({ sizeKiB: 48 * 1024, inodes: 60 });
      fs.writeFileSync(path.join(mount.path, 'after-raise'), 'x');
      expect(fill(path.join(mount.path, 'grow'), 20 * MiB).code).toBeNull();
      const refused = await client.request({ type: 'set-quotas', id: 'q', sizeQuota: 1 * MiB });
      expect(refused).toMatchObject({ ok: false, code: 'E_BAD_OPTION' });
      expect(df(mount.path)).toEqual({ sizeKiB: 48 * 1024, inodes: 60 });
    } finally {
      client.close();
    }
  });
});

describe.skipIf(skip)('node daemon: crash, restart, cleanup', () => {
  let stateDir: string | undefined;
  let daemon: TestDaemon | undefined;
  let slaveBind: string | undefined;
  afterEach(async () => {
    await daemon?.stop();
    if (slaveBind) for (let i = 0; i < 4 && mountsUnder(slaveBind).length > 0; i++) spawnSync('umount', ['-l', slaveBind], { timeout: 10_000 });
    if (stateDir) cleanupStateDir(stateDir);
  });

  it('kill -9 and restart: the same paths serve again (empty), a container-style rslave bind sees it, nothing hangs; cleanup leaves no trace', async () => {
    stateDir = makeStateDir();
    daemon = await startDaemon(stateDir);
    let client = await daemon.client();
    const { mount: a } = await client.addMount({ id: 'c1', budget: 1 * MiB, sizeQuota: 0, inodeQuota: 0, owner: 't' });
    const { mount: b } = await client.addMount({ id: 'c2', budget: 0, sizeQuota: 16 * MiB, inodeQuota: 0, owner: 't' });
    // What Docker does for a /tmp bind with rslave propagation.
    slaveBind = path.join(path.dirname(stateDir), 'container-tmp');
    fs.mkdirSync(slaveBind);
    execFileSync('mount', ['--rbind', a.path, slaveBind]);
    execFileSync('mount', ['--make-rslave', slaveBind]);
    fs.writeFileSync(path.join(slaveBind, 'before'), 'lost in the crash');
    fs.writeFileSync(path.join(b.path, 'spilled'), Buffer.alloc(MiB, 1));
    expect(fs.readFileSync(path.join(a.path, 'before'), 'utf8')).toBe('lost in the crash');
    client.close();

    await daemon.kill9();
    expect(() => fs.readdirSync(a.path)).toThrow(/ENOTCONN|ECONNABORTED/);

    daemon = await startDaemon(stateDir);
    expect(daemon.ready.remounted).toEqual(['c1', 'c2']);
    client = await daemon.client();
    try {
      for (const dir of [a.path, b.path, slaveBind]) {
        expect(fs.readdirSync(dir), dir).toEqual([]);
      }
      fs.writeFileSync(path.join(slaveBind, 'after'), 'seen through the bind');
      expect(fs.readFileSync(path.join(a.path, 'after'), 'utf8')).toBe('seen through the bind');
      const s2 = await client.stats('c2');
      expect(s2.sizeQuota).toBe(16 * MiB);
      expect(s2.diskTierBounded).toBe(true); // a fresh disk-tier file system replaced the dead one
      expect(df(b.path).sizeKiB).toBe(16 * 1024);
    } finally {
      client.close();
    }

    // A second crash, then cleanup instead of a restart.
    await daemon.kill9();
    daemon = undefined;
    const refusedWhileAlive = spawnSync(process.execPath, [CLI, 'cleanup', '--state-dir', '/nonexistent-ephemera-state'], { encoding: 'utf8', timeout: 30_000 });
    expect(refusedWhileAlive.status).toBe(0); // nothing there: nothing to do
    for (let i = 0; i < 4 && mountsUnder(slaveBind).length > 0; i++) execFileSync('umount', ['-l', slaveBind]);
    const r = spawnSync(process.execPath, [CLI, 'cleanup', '--state-dir', stateDir, '--json'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(mountsUnder(stateDir)).toEqual([]);
    expect(fs.existsSync(stateDir)).toBe(false);
  });

  it('cleanup refuses while the daemon is alive', async () => {
    stateDir = makeStateDir();
    daemon = await startDaemon(stateDir);
    const r = spawnSync(process.execPath, [CLI, 'cleanup', '--state-dir', stateDir], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/E_DAEMON/);
    expect(fs.existsSync(daemon.socket)).toBe(true);
  });
});

describe.skipIf(skip)('node daemon: budget', () => {
  let stateDir: string | undefined;
  let daemon: TestDaemon | undefined;
  afterAll(async () => {
    await daemon?.stop();
    if (stateDir) cleanupStateDir(stateDir);
  });

  it('lowering the budget spills closed files oldest-close first and reports what open files hold; raising it promotes', async () => {
    stateDir = makeStateDir();
    daemon = await startDaemon(stateDir);
    const client = await daemon.client();
    try {
      const { mount } = await client.addMount({ id: 'b', budget: 64 * MiB, sizeQuota: 0, inodeQuota: 0, owner: 't' });
      for (const name of ['old', 'mid', 'new']) {
        fs.writeFileSync(path.join(mount.path, name), Buffer.alloc(4 * MiB, 7));
        await new Promise((r) => setTimeout(r, 20));
      }
      const held = fs.openSync(path.join(mount.path, 'held'), 'w');
      try {
        fs.writeSync(held, Buffer.alloc(4 * MiB, 9));
        const inoOf = (n: string) => fs.statSync(path.join(mount.path, n)).ino;
        const tierOf = async () => {
          const table = (await client.stats('b', true)).inodeTable!;
          return Object.fromEntries(['old', 'mid', 'new', 'held'].map((n) => [n, table.find((i) => i.ino === inoOf(n))!.tier]));
        };
        // 16 MiB in memory, budget 10 MiB: the two oldest closed files go (8 MiB is enough).
        let r = await client.setBudget('b', 10 * MiB);
        expect(r.eviction.spilled).toBe(2);
        expect(await tierOf()).toEqual({ old: 'disk', mid: 'disk', new: 'memory', held: 'memory' });
        // Budget 0: the last closed one goes; the open one cannot, and is reported.
        r = await client.setBudget('b', 0);
        expect(r.eviction.shortfallBytes).toBeGreaterThanOrEqual(4 * MiB);
        expect(r.openBytesOverBudget).toBeGreaterThanOrEqual(4 * MiB);
        expect(await tierOf()).toEqual({ old: 'disk', mid: 'disk', new: 'disk', held: 'memory' });
        // New files go straight to disk while over budget.
        fs.writeFileSync(path.join(mount.path, 'fresh'), 'x');
        const fresh = (await client.stats('b', true)).inodeTable!.find((i) => i.ino === inoOf('fresh'))!;
        expect(fresh.tier).toBe('disk');
        for (const n of ['old', 'mid', 'new']) expect(fs.readFileSync(path.join(mount.path, n)).equals(Buffer.alloc(4 * MiB, 7))).toBe(true);
      } finally {
        fs.closeSync(held);
      }
      // Room again: closed files come back, once the anti-thrash window (2 s by default) has passed.
      await client.setBudget('b', 64 * MiB);
      let s = await client.stats('b');
      for (let i = 0; i < 40 && s.bytes.disk > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        s = await client.stats('b');
      }
      expect(s.bytes.disk).toBe(0);
      expect(s.promotions).toBeGreaterThanOrEqual(3);
    } finally {
      client.close();
    }
  });
});
