// What ordinary programs do to /tmp, on a real mount with a real cgroup v1 memory limit and the
// memory adapter: a log reopened and appended to, a database reopened and grown past memory, a
// mapping written after close() while the store tries to move the file, unlink and recreate during
// a move, 100,000 files in one mount while a second keeps creating (fds bounded), links and
// symlinks at the inode quota compared with a tmpfs of the same quota in the same run.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EphemeraMount } from '../../fusefs/mount';
import { cgroupV1Unavailable, createTestCgroup, killAndWait, removeAllTestCgroups, spawnInCgroup, type HeldProcess, type TestCgroup } from '../support/cgroups';
import { cleanupDir, mountUnavailableReason } from '../support/mount';
import { closeMountsChecked } from '../support/protocol';
import { until } from '../support/wait';

const MiB = 1 << 20;
const PROGRAMS = path.join(__dirname, '..', '..', 'bench', 'workloads', 'ordinary.py'); // also the bench's workload
const why = mountUnavailableReason() ?? cgroupV1Unavailable() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING store v2 ordinary-program tests: ${why}\n`);

const fdCount = (pid: number | 'self' = 'self') => fs.readdirSync(`/proc/${pid}/fd`).length;

describe.skipIf(why !== undefined)('store v2: ordinary programs keep both promises', () => {
  let base: string;
  const mounts: EphemeraMount[] = [];
  let cg: TestCgroup | undefined;
  let child: HeldProcess | undefined;
  const tmpfsMounts: string[] = [];

  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-store-'));
    fs.chmodSync(base, 0o755);
  });
  afterEach(async () => {
    await killAndWait(child);
    child = undefined;
    const protocol = await closeMountsChecked(mounts.splice(0));
    for (const t of tmpfsMounts.splice(0)) execFileSync('umount', ['-l', t], { stdio: 'ignore' });
    await cg?.remove();
    cg = undefined;
    protocol.assert();
    await removeAllTestCgroups();
  });
  afterAll(() => {
    for (const d of fs.readdirSync(base)) cleanupDir(path.join(base, d));
    fs.rmSync(base, { recursive: true, force: true });
  });

  async function open(name: string, extra: { inodeQuota?: number; sizeQuota?: number } = {}) {
    const dir = path.join(base, name);
    fs.mkdirSync(dir, { recursive: true });
    const spill = path.join(base, `${name}-spill`);
    fs.mkdirSync(spill, { recursive: true, mode: 0o700 });
    const m = await EphemeraMount.open({ mountpoint: dir, spillDir: spill, allowOther: true, ...extra });
    mounts.push(m);
    return m;
  }
  function runIn(c: TestCgroup, args: string[]) {
    child = spawnInCgroup(c.cgroup, 'python3', [PROGRAMS, ...args]);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    return Object.assign(child, { stderrText: () => err });
  }
  const lastJson = (p: HeldProcess) => JSON.parse(p.stdoutText().trim().split('\n').pop() ?? '{}') as Record<string, unknown>;

  for (const hint of [null, 4 * MiB] as const) {
    it(`a log closed, reopened and appended to (1 MiB × 160) in 128 MiB, size hint ${hint === null ? 'none' : '4 MiB'}: 0 OOM kills, every byte back`, async () => {
      cg = await createTestCgroup({ limitBytes: 128 * MiB });
      const m = await open(`append-${hint ?? 'none'}`);
      // With no hint the log starts on disk and is promoted during the pause; with a small one it
      // starts in memory. Either way it must leave memory at the reopen that no longer fits.
      const adapter = await m.attachCgroupBudget({ cgroupPath: cg.dir, sizeHintBytes: hint });
      const p = runIn(cg, ['append', m.mountpoint, '160', '8']);
      const exit = await p.exited;
      const result = p.stdoutText().trim() ? lastJson(p) : {};
      const u = m.usage();
      console.log(`[store] append 160 MiB in 128 MiB (hint ${hint ?? 'none'}): exit ${exit}, ${Number(result.seconds).toFixed(2)} s, promotions ${adapter.stats.promotions}, demoted at open ${u.demotedAtOpen}, OOM kills ${cg.cgroup.oomState().oomKills}`);
      expect(exit, p.stdoutText() + p.stderrText()).toBe(0);
      expect(result.ok).toBe(true);
      expect(cg.cgroup.oomState().oomKills).toBe(0);
      expect(fs.statSync(path.join(m.mountpoint, 'app.log')).size).toBe(160 * MiB);
      // Once on disk it stayed there while written: not a copy of the whole file at every reopen.
      expect(u.demotedAtOpen).toBeLessThanOrEqual(4);
      if (adapter.stats.promotions > 0) expect(u.demotedAtOpen).toBeGreaterThanOrEqual(1);
    });
  }

  it('sqlite: created, closed, reopened and grown to 150 MiB in 128 MiB: 0 OOM kills, integrity ok', async () => {
    cg = await createTestCgroup({ limitBytes: 128 * MiB });
    const m = await open('sqlite');
    // No hint (a new user's mount): the db starts on disk, is promoted while closed, and must go
    // back to disk at the reopen for writing before it grows past the limit.
    const adapter = await m.attachCgroupBudget({ cgroupPath: cg.dir });
    const p = runIn(cg, ['sqlite', m.mountpoint, '150']);
    const exit = await p.exited;
    const result = p.stdoutText().trim() ? lastJson(p) : {};
    console.log(`[store] sqlite grown to ${(Number(result.bytes) / MiB).toFixed(0)} MiB in 128 MiB: exit ${exit}, ${Number(result.seconds).toFixed(2)} s, promotions ${adapter.stats.promotions}, demoted at open ${m.usage().demotedAtOpen}`);
    expect(exit, p.stdoutText() + p.stderrText()).toBe(0);
    expect(result.integrity).toBe('ok');
    expect(result.bad).toBe(0);
    expect(Number(result.bytes)).toBeGreaterThan(128 * MiB);
    expect(cg.cgroup.oomState().oomKills).toBe(0);
  });

  it('MAP_SHARED kept after close(): a forced move is refused while mapped, the write after it reads back', async () => {
    cg = await createTestCgroup({ limitBytes: 256 * MiB });
    const m = await open('mapclose');
    const file = path.join(m.mountpoint, 'mapped');
    const p = runIn(cg, ['mapclose', file, '16']);
    await until(() => p.stdoutText().includes('mapped'), 20000, 'the mapping');
    await until(() => m.inodeStats().some((s) => s.openCount === 0), 5000, 'the release after close()');
    const ino = m.inodeStats().find((s) => s.size === 16 * MiB)!.ino;
    expect(m.inodeStats().find((s) => s.ino === ino)!.tier).toBe('memory');
    // The store is asked to move the file while the process still maps it (what the adapter's
    // spill does to a closed file): refused, so the mapping's next writes are not stranded.
    const r = await m.moveNow(ino, 'disk');
    expect(r.code).toBe('EBUSY');
    expect(m.usage().movesRefusedMapped).toBeGreaterThanOrEqual(1);
    expect(m.usage().movesUnverified).toBe(0);
    p.stdin.write('go\n');
    expect(await p.exited, p.stdoutText()).toBe(0);
    expect(lastJson(p).ok).toBe(true);
    // Unmapped, it moves, and reads back what the mapping wrote.
    await until(() => m.inodeStats().find((s) => s.ino === ino)!.openCount === 0, 5000, 'the last release');
    expect((await m.moveNow(ino, 'disk')).code).toBe('OK');
    const back = fs.readFileSync(file);
    const again = execFileSync('python3', ['-c', `import hashlib,sys; MiB=1<<20; sys.stdout.buffer.write(b''.join(hashlib.sha256(f"second:{i}".encode()).digest()*(MiB//32) for i in range(16)))`], { maxBuffer: 64 * MiB });
    expect(back.equals(again)).toBe(true);
  });

  /**
   * Starts a move of a closed 1 MiB file `a` (bytes 'a'), unlinks it, and waits until a new file
   * `b` of the same size (bytes 'b') has taken its inode slot: only the generation tells them apart.
   */
  async function moveThenReuseSlot(name: string) {
    const m = await open(name);
    const a = path.join(m.mountpoint, 'a');
    fs.writeFileSync(a, Buffer.alloc(1 * MiB, 0x61));
    const inodes = m.usage().inodes;
    const ino = fs.statSync(a).ino;
    // RELEASE follows close() asynchronously: a move starts only on a closed file.
    await until(() => m.inodeStats().find((st) => st.ino === ino)?.openCount === 0, 5000, 'the release of a');
    const ticket = m.beginMove(ino, 'disk');
    // The slot is free once the kernel's FORGET, which comes asynchronously, has arrived.
    fs.unlinkSync(a);
    await until(() => m.usage().inodes < inodes, 10000, 'the FORGET of the unlinked file');
    const b = path.join(m.mountpoint, 'b');
    fs.writeFileSync(b, Buffer.alloc(1 * MiB, 0x62));
    expect(fs.statSync(b).ino).toBe(ino);
    return { m, ticket, ino, b };
  }

  it('unlink and recreate during a move: the move keeps its own fds, and the copy never lands on the new file', async () => {
    const { m, ticket, ino, b } = await moveThenReuseSlot('race');
    // The move still owns the old file's fd: it reads the old bytes, not whatever took the number.
    const buf = Buffer.alloc(1 * MiB);
    expect(fs.readSync(ticket.srcFd, buf, 0, buf.length, 0)).toBe(1 * MiB);
    expect(buf.equals(Buffer.alloc(1 * MiB, 0x61))).toBe(true);
    fs.writeSync(ticket.dstFd, buf, 0, buf.length, 0);
    expect(m.commitMove(ticket.token)).not.toBe(0);
    expect(fs.readFileSync(b).equals(Buffer.alloc(1 * MiB, 0x62))).toBe(true);
    expect(m.inodeStats().find((s) => s.ino === ino)!.tier).toBe('memory');
    // An abort closes the move's fds.
    await until(() => m.inodeStats().find((st) => st.ino === ino)?.openCount === 0, 5000, 'the release of b');
    const t2 = m.beginMove(ino, 'disk');
    m.abortMove(t2.token);
    expect(() => fs.fstatSync(t2.srcFd)).toThrow();
  });

  it('a move started before unlink never commits onto the file that took the slot (generation)', async () => {
    const { m, ticket, b } = await moveThenReuseSlot('generation');
    // The copy of a's bytes is finished (written from memory here) and committed: refused.
    fs.writeSync(ticket.dstFd, Buffer.alloc(1 * MiB, 0x61), 0, 1 * MiB, 0);
    expect(m.commitMove(ticket.token)).not.toBe(0);
    expect(fs.readFileSync(b).equals(Buffer.alloc(1 * MiB, 0x62))).toBe(true);
  });

  it('100,000 files in one mount while a second keeps creating: fds bounded by open handles, not files', async () => {
    const before = fdCount();
    const one = await open('many');
    const two = await open('other');
    const script = (dir: string, n: number, tag: string) =>
      `import os\nfor i in range(${n}):\n  with open(os.path.join('${dir}', '${tag}%d' % i), 'wb') as f: f.write(b'x' * 64)\nprint(len(os.listdir('${dir}')))`;
    const other = execFileSync('sh', ['-c', `python3 -c "$1" & python3 -c "$2"; wait`, 'sh', script(two.mountpoint, 20000, 'o'), script(one.mountpoint, 100000, 'f')], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    const counts = other.trim().split('\n').map(Number).sort((x, y) => x - y);
    expect(counts).toEqual([20000, 100000]);
    const u = one.usage();
    const held = fdCount() - before;
    console.log(`[store] 100,000 + 20,000 files in two mounts: ${held} more fds in the store's process (open files ${u.openFiles + two.usage().openFiles})`);
    expect(u.files).toBe(100000);
    expect(held).toBeLessThanOrEqual(u.openFiles + two.usage().openFiles + 2 * 8 + 64);
    // Reads still work with no fd held per file, and the names cost room like tmpfs' pages.
    expect(fs.readFileSync(path.join(one.mountpoint, 'f99999'), 'utf8')).toBe('x'.repeat(64));
    expect(u.nameBytes).toBeGreaterThan(100000 * 2);
  });

  it('50 mounts: the store process holds at most 8 fds per mount + 64 beyond open handles', async () => {
    const before = fdCount();
    for (let i = 0; i < 50; i++) {
      const m = await open(`fifty-${i}`);
      fs.writeFileSync(path.join(m.mountpoint, 'f'), 'x');
    }
    const held = fdCount() - before;
    console.log(`[store] 50 mounts, one closed file each: ${held} more fds`);
    expect(held).toBeLessThanOrEqual(50 * 8 + 64);
  });

  it('links and symlinks at the inode quota: ENOSPC where a tmpfs of the same nr_inodes gives it', async () => {
    const quota = 1000;
    const m = await open('links', { inodeQuota: quota });
    const t = path.join(base, 'links-tmpfs');
    fs.mkdirSync(t, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', `nr_inodes=${quota},size=64m`, 'ephemera-test', t]);
    tmpfsMounts.push(t);
    const fill = (dir: string, kind: 'link' | 'symlink') => {
      fs.writeFileSync(path.join(dir, `${kind}-target`), 'x');
      let made = 0;
      for (let i = 0; i < 5000; i++) {
        try {
          if (kind === 'link') fs.linkSync(path.join(dir, `${kind}-target`), path.join(dir, `l${i}`));
          else fs.symlinkSync(`${kind}-target`, path.join(dir, `s${i}`));
          made++;
        } catch (e) {
          expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
          break;
        }
      }
      return made;
    };
    const ours = fill(m.mountpoint, 'link');
    const theirs = fill(t, 'link');
    console.log(`[store] hard links at nr_inodes=${quota}: ephemera ${ours}, tmpfs ${theirs}`);
    expect(ours).toBeLessThan(quota);
    expect(Math.abs(ours - theirs)).toBeLessThanOrEqual(2); // the root and the target count on both
    for (let i = 0; i < ours; i++) fs.unlinkSync(path.join(m.mountpoint, `l${i}`));
    for (let i = 0; i < theirs; i++) fs.unlinkSync(path.join(t, `l${i}`));
    fs.unlinkSync(path.join(m.mountpoint, 'link-target'));
    fs.unlinkSync(path.join(t, 'link-target'));
    const oursS = fill(m.mountpoint, 'symlink');
    const theirsS = fill(t, 'symlink');
    console.log(`[store] symlinks at nr_inodes=${quota}: ephemera ${oursS}, tmpfs ${theirsS}`);
    expect(Math.abs(oursS - theirsS)).toBeLessThanOrEqual(2);
    // Unlinked, the links give their inodes back.
    expect(m.usage().links).toBe(0);
  });

  it('names and symlink targets count against the size quota: a 1 MiB /tmp refuses a flood of long names', async () => {
    const m = await open('names', { sizeQuota: 1 * MiB });
    let made = 0;
    const long = 'n'.repeat(200);
    for (let i = 0; i < 20000; i++) {
      try {
        fs.symlinkSync('t'.repeat(4000), path.join(m.mountpoint, `${long}${i}`));
        made++;
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
        break;
      }
    }
    const u = m.usage();
    console.log(`[store] 1 MiB quota: ${made} symlinks of 4000 B with 200-byte names, ${u.nameBytes} bytes held`);
    expect(made).toBeLessThan(300);
    expect(u.nameBytes).toBeLessThanOrEqual(1 * MiB);
    const st = fs.statfsSync(m.mountpoint);
    expect(st.bfree).toBeLessThan(10);
  });
});
