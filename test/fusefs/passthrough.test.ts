// Passthrough refused, loudly: `--mode passthrough` fails when the kernel will not pass through
// (it used to serve through the daemon without a word), and a backing file the kernel refuses
// under passthrough is served through the daemon intact, counted and logged (mode auto), or fails
// the open with EIO (mode passthrough, which promised no data byte through the daemon).
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EphemeraMount } from '../../fusefs/mount';
import { cleanupDir, REPO, skipLoudly } from '../support/mount';
import { closeMountsChecked } from '../support/protocol';

const CLI = path.join(REPO, 'bin', 'ephemera.js');
const skip = skipLoudly('passthrough refusals');

describe.skipIf(skip)('passthrough refused', () => {
  const undo: Array<() => void | Promise<void>> = [];
  afterEach(async () => {
    for (const step of undo.splice(0).reverse()) await step();
  });
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-pt-'));
    undo.push(() => fs.rmSync(d, { recursive: true, force: true }));
    return d;
  };

  it('--mode passthrough fails with E_PASSTHROUGH_REFUSED where backing files are refused (a user namespace)', () => {
    const dir = path.join(tmp(), 'mnt');
    fs.mkdirSync(dir);
    // Root of a new user namespace: it may mount FUSE, but the kernel registers backing files only
    // for CAP_SYS_ADMIN in the initial one. The mount namespace dies with the process.
    const r = spawnSync('timeout', ['-s', 'KILL', '15', 'unshare', '-Urm', process.execPath, CLI, 'mount', dir, '--mode', 'passthrough', '--json'], {
      encoding: 'utf8',
    });
    expect(r.stdout).not.toContain('"ready"');
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('E_PASSTHROUGH_REFUSED');
    expect(r.stderr).toContain('CAP_SYS_ADMIN');
  });

  // A disk tier the kernel will not stack on (overlayfs: BACKING_OPEN answers ELOOP), and the mountpoint beside it.
  const overlayDir = async (base: string) => {
    for (const d of ['lower', 'upper', 'work', 'overlay', 'mnt']) fs.mkdirSync(path.join(base, d));
    const overlay = path.join(base, 'overlay');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work`, overlay]);
    undo.push(() => void execFileSync('umount', ['-l', overlay]));
    return overlay;
  };

  it('a backing file the kernel refuses (disk tier on overlayfs: ELOOP) is served through the daemon, intact and counted', async () => {
    const base = tmp();
    const mnt = path.join(base, 'mnt');
    // In this process: `ephemera mount` refuses a spill dir on overlayfs, EphemeraMount does not.
    const m = await EphemeraMount.open({ mountpoint: mnt, spillDir: await overlayDir(base) });
    undo.push(async () => {
      const protocol = await closeMountsChecked([m]);
      cleanupDir(mnt);
      protocol.assert();
    });
    expect(m.mode).toBe('passthrough');
    m.setPlacement({ memoryBudget: 0, newFileRoom: 0 }); // new files on the disk tier, stacked on overlayfs

    const data = crypto.randomBytes(4 << 20);
    const file = path.join(mnt, 'on-disk-tier');
    fs.writeFileSync(file, data);
    // Two handles at once: the second must be served the same way (a passthrough open beside a
    // cached one is EIO in the kernel).
    const a = fs.openSync(file, 'r+');
    const b = fs.openSync(file, 'r');
    try {
      fs.writeSync(a, Buffer.from('overwritten'), 0, 11, 4096);
      const back = Buffer.alloc(data.length);
      expect(fs.readSync(b, back, 0, back.length, 0)).toBe(data.length);
      data.write('overwritten', 4096);
      expect(back.equals(data)).toBe(true);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
    expect(m.inodeStats().find((i) => i.size === data.length)?.tier).toBe('disk');
    const c = m.counters();
    expect(c.backingOpenFailures).toBeGreaterThanOrEqual(2); // the create and the first reopen
    expect(c.ops.WRITE?.count ?? 0).toBeGreaterThan(0); // the data went through the daemon
    expect(c.unanswered).toBe(0);
    expect(c.exceptions).toBe(0);
    expect(c.badReplies).toBe(0);
  });

  it('under --mode passthrough a backing file the kernel refuses fails the open with EIO, counted; no data byte goes through the daemon', async () => {
    const base = tmp();
    const mnt = path.join(base, 'mnt');
    const m = await EphemeraMount.open({ mountpoint: mnt, spillDir: await overlayDir(base), mode: 'passthrough' });
    undo.push(async () => {
      await m.close();
      cleanupDir(mnt);
    });
    expect(m.mode).toBe('passthrough');
    const inMemory = path.join(mnt, 'in-memory');
    const moved = path.join(mnt, 'moved-to-disk');
    fs.writeFileSync(inMemory, 'memory tier: passed through'); // the memory tier is a tmpfs: registered
    fs.writeFileSync(moved, 'spilled');
    const before = m.counters().backingOpenFailures;
    expect(before).toBe(0);

    // A file spilled to the disk tier (stacked on overlayfs): every open of it is refused.
    const ino = fs.statSync(moved).ino;
    expect((await m.moveNow(ino, 'disk')).code).toBe('OK');
    expect(() => fs.openSync(moved, 'r')).toThrow(expect.objectContaining({ code: 'EIO' }));
    expect(() => fs.openSync(moved, 'r+')).toThrow(expect.objectContaining({ code: 'EIO' }));
    expect(m.inodeStats().find((i) => i.ino === ino)).toMatchObject({ tier: 'disk', openCount: 0 });

    // A new file placed on the disk tier: the create fails, and leaves no name behind.
    m.setPlacement({ memoryBudget: 0, newFileRoom: 0 });
    const created = path.join(mnt, 'created-on-disk');
    expect(() => fs.writeFileSync(created, 'x')).toThrow(expect.objectContaining({ code: 'EIO' }));
    expect(fs.existsSync(created)).toBe(false);
    expect(fs.readdirSync(mnt).sort()).toEqual(['in-memory', 'moved-to-disk']);

    expect(fs.readFileSync(inMemory, 'utf8')).toBe('memory tier: passed through');
    const c = m.counters();
    expect(c.backingOpenFailures - before).toBe(3);
    expect(c.ops.WRITE?.count ?? 0).toBe(0);
    expect(c.ops.READ?.count ?? 0).toBe(0);
    fs.unlinkSync(moved); // refused files hold no handle: they go as any other
    expect(m.usage().files).toBe(1);
    expect(c.unanswered).toBe(0);
    expect(c.exceptions).toBe(0);
    expect(c.badReplies).toBe(0);
  });
});
