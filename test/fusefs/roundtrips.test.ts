// Round trips per operation, counted by the daemon's per-opcode counters on a real mount. Every
// file operation runs in a child process under a timeout, so a hung request fails the test
// instead of blocking this worker (the mount is served by native threads of this process).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EphemeraMount } from '../../fusefs/mount';
import type { NativeCounters } from '../../fusefs/native';
import { cleanupDir, skipLoudly } from '../support/mount';
import { closeMountsChecked } from '../support/protocol';

const skip = skipLoudly('round-trip counts');
const CHILD_TIMEOUT_MS = 20_000;

function sh(script: string, opts: { uid?: number } = {}): string {
  const r = spawnSync('sh', ['-ec', script], { encoding: 'utf8', timeout: CHILD_TIMEOUT_MS, killSignal: 'SIGKILL', uid: opts.uid, gid: opts.uid });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`sh exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Requests of each opcode between two counter snapshots. */
function delta(before: NativeCounters, after: NativeCounters): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [op, row] of Object.entries(after.ops)) {
    const n = row.count - (before.ops[op]?.count ?? 0);
    if (n) out[op] = n;
  }
  return out;
}

describe.skipIf(skip)('round trips per operation', () => {
  const mounts: EphemeraMount[] = [];
  const bases: string[] = [];
  afterEach(async () => {
    const protocol = await closeMountsChecked(mounts.splice(0));
    for (const b of bases.splice(0)) {
      cleanupDir(path.join(b, 'mnt'));
      fs.rmSync(b, { recursive: true, force: true });
    }
    protocol.assert();
  });
  async function mount(extra: Parameters<typeof EphemeraMount.open>[0] extends infer O ? Partial<O> : never = {}) {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-rt-'));
    bases.push(base);
    fs.chmodSync(base, 0o755);
    const dir = path.join(base, 'mnt');
    fs.mkdirSync(dir);
    const m = await EphemeraMount.open({ mountpoint: dir, allowOther: true, ...extra });
    mounts.push(m);
    return { m, dir };
  }

  // What each operation sends per file, in the order a program does them. The kernel's side of
  // every row (fs/fuse/dir.c, file.c): a new name is looked up before CREATE/MKDIR (atomic_open);
  // a create, unlink, mkdir or rmdir invalidates the parent directory's attributes
  // (fuse_dir_changed), so the next path walk through it asks GETATTR for the permission check
  // (default_permissions); a passthrough write invalidates size and times (fuse_write_update_attr)
  // and a read the atime, so the next stat asks; FLUSH is answered ENOSYS once (no_flush) and
  // RELEASE goes in the background; an unlinked inode's FORGET follows (no reply).
  it('per file: what create, 4 KiB write, close, stat, open for read, chmod, utimens, unlink, mkdir send', async () => {
    const { m, dir } = await mount();
    const N = 100;
    const loop = (body: string) => `cd ${dir}; i=0; while [ $i -lt ${N} ]; do i=$((i+1)); ${body}; done`;
    // One warm-up file: FLUSH (ENOSYS) and security.capability (GETXATTR, ENOSYS) are asked once per mount.
    sh(`cd ${dir}; head -c 4096 /dev/zero > warm; rm warm`);
    // The warm-up file's FORGET travels in the background too: let it land before the first row
    // (a fresh-clone CI run counted it in the create row: FORGET 1, expected 0).
    await new Promise((r) => setTimeout(r, 300));
    const rows: Array<[string, string, Record<string, number>]> = [
      ['create + 4 KiB write + close', 'head -c 4096 /dev/zero > f$i', { LOOKUP: 1, CREATE: 1, GETATTR: 1, RELEASE: 1 }],
      ['stat after the write', 'stat f$i >/dev/null', { GETATTR: 1 }],
      ['stat again', 'stat f$i >/dev/null', {}],
      ['open for read + read + close', 'cat f$i >/dev/null', { OPEN: 1, RELEASE: 1 }],
      ['stat after the read (atime)', 'stat f$i >/dev/null', { GETATTR: 1 }],
      ['chmod', 'chmod 600 f$i', { SETATTR: 1 }],
      ['utimens', 'touch -c f$i', { SETATTR: 1 }],
      ['stat after chmod and utimens', 'stat f$i >/dev/null', {}],
      ['unlink', 'rm f$i', { UNLINK: 1, GETATTR: 1, FORGET: 1 }],
      ['mkdir', 'mkdir d$i', { LOOKUP: 1, MKDIR: 1, GETATTR: 1 }],
      ['rmdir', 'rmdir d$i', { RMDIR: 1, GETATTR: 1, FORGET: 1 }],
    ];
    const table: string[] = [];
    for (const [what, body, expected] of rows) {
      const c0 = m.counters();
      sh(loop(body));
      // RELEASE and FORGET travel in the background: let them land before counting.
      await new Promise((r) => setTimeout(r, 300));
      const d = delta(c0, m.counters());
      // FORGETs may come batched; count the inodes they name as one FORGET each (at most).
      const forgets = (d.FORGET ?? 0) + (d.BATCH_FORGET ?? 0);
      delete d.BATCH_FORGET;
      if (forgets) d.FORGET = forgets;
      table.push(`${what.padEnd(32)} ${Object.entries(d).map(([op, n]) => `${op} ${(n / N).toFixed(2)}`).join(', ') || '-'}`);
      for (const op of new Set([...Object.keys(d), ...Object.keys(expected)])) {
        const want = (expected[op] ?? 0) * N;
        // FORGET: BATCH_FORGET carries many, so fewer requests is fine. Every other opcode is
        // exact up to 2 at the loop's ends (a directory's GETATTR falls on the next file's walk).
        if (op === 'FORGET') expect(d[op] ?? 0, `${what}: FORGET`).toBeLessThanOrEqual(want);
        else expect(Math.abs((d[op] ?? 0) - want), `${what}: ${op} (${table.at(-1)})`).toBeLessThanOrEqual(2);
      }
    }
    process.stdout.write(`round trips per file:\n${table.join('\n')}\n`);
  });

  it('an unlinked file\'s backing file is gone right after the UNLINK reply (let go after the reply, not before)', async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-rt-mem-'));
    bases.push(base);
    const { m, dir } = await mount({ memoryDir: path.join(base, 'mem') });
    const backingFiles = () =>
      fs.readdirSync(path.join(base, 'mem')).filter((d) => d.startsWith('store-')).flatMap((d) => fs.readdirSync(path.join(base, 'mem', d)));
    const N = 100;
    sh(`cd ${dir}; i=0; while [ $i -lt ${N} ]; do i=$((i+1)); head -c 4096 /dev/zero > f$i; done`);
    expect(backingFiles()).toHaveLength(N);
    const before = m.counters();
    sh(`cd ${dir}; rm f*`);
    // The thread that answered the last UNLINK unlinks its backing file before reading another request.
    const deadline = Date.now() + 2000;
    while (backingFiles().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(backingFiles()).toEqual([]);
    expect(delta(before, m.counters()).UNLINK).toBe(N);
    expect(m.counters().exceptions).toBe(0);
  });

  it('a directory listing costs no OPENDIR/RELEASEDIR (ENOSYS once), and an unchanged one is served from the kernel cache', async () => {
    const { m, dir } = await mount();
    const K = 20;
    sh(`cd ${dir}; for i in $(seq ${K}); do mkdir d$i; : > d$i/a; : > d$i/b; : > d$i/c; done`);
    const c0 = m.counters();
    const listing = sh(`cd ${dir}; for i in $(seq ${K}); do ls d$i; done`);
    expect(listing.split('\n').filter(Boolean)).toHaveLength(3 * K);
    const c1 = m.counters();
    const first = delta(c0, c1);
    // The first OPENDIR is answered ENOSYS; the kernel never sends OPENDIR or RELEASEDIR again.
    // Before: OPENDIR + READDIRPLUS (entries) + READDIRPLUS (end) + RELEASEDIR = 4 per listing.
    expect(first.OPENDIR).toBe(1);
    expect(c1.ops.OPENDIR?.errors).toBe(1);
    expect(first.RELEASEDIR ?? 0).toBe(0);
    const reads = (first.READDIR ?? 0) + (first.READDIRPLUS ?? 0);
    expect(reads).toBeGreaterThanOrEqual(K);
    expect(reads).toBeLessThanOrEqual(2 * K);
    const perListing = (1 + reads) / K;
    expect(perListing).toBeLessThan(4);

    // Listing again: no directory changed, so the kernel's readdir cache (FOPEN_CACHE_DIR, the
    // default for an OPENDIR-less directory) answers and the daemon sees nothing.
    sh(`cd ${dir}; for i in $(seq ${K}); do ls d$i >/dev/null; done`);
    const again = delta(c1, m.counters());
    for (const op of ['OPENDIR', 'RELEASEDIR', 'READDIR', 'READDIRPLUS']) expect(again[op] ?? 0).toBe(0);

    // A change through the mount drops that cache: the new name is listed.
    expect(sh(`cd ${dir}; : > d1/new; rm d2/a; ls d1; echo --; ls d2`).split('\n').filter(Boolean)).toEqual(['a', 'b', 'c', 'new', '--', 'b', 'c']);
  });

  it('with FUSE_HANDLE_KILLPRIV_V2, writes to a setuid file cost one SETATTR (the bits go), then none', async () => {
    const { m, dir } = await mount();
    expect(m.info.killprivV2).toBe(true);
    sh(`cd ${dir}; echo x > plain; echo x > suid; chmod 4666 suid; chmod 666 plain`);
    const c0 = m.counters();
    const N = 50;
    // 50 separate write(2)s through one open file each, by an unprivileged writer.
    const writes = (f: string) => `i=0; exec 3<>${dir}/${f}; while [ $i -lt ${N} ]; do printf w >&3; i=$((i+1)); done; exec 3>&-`;
    sh(writes('suid'), { uid: 1000 });
    const c1 = m.counters();
    expect(delta(c0, c1).SETATTR).toBe(1);
    expect(fs.statSync(path.join(dir, 'suid')).mode & 0o7777).toBe(0o666);
    sh(writes('plain'), { uid: 1000 });
    expect(delta(c1, m.counters()).SETATTR ?? 0).toBe(0);
  });

  it('with --xattrs, writes no longer ask for security.capability each time (SB_NOSEC); without KILLPRIV_V2 they do', async () => {
    const N = 200;
    const writes = (dir: string) => `i=0; exec 3<>${dir}/f; while [ $i -lt ${N} ]; do printf w >&3; i=$((i+1)); done; exec 3>&-`;
    const getxattrs = async (killprivV2: boolean) => {
      const { m, dir } = await mount({ xattrs: true, killprivV2 });
      sh(`: > ${dir}/f`);
      const c0 = m.counters();
      sh(writes(dir));
      return delta(c0, m.counters()).GETXATTR ?? 0;
    };
    expect(await getxattrs(true)).toBeLessThanOrEqual(2);
    expect(await getxattrs(false)).toBeGreaterThanOrEqual(N);
  });

  it('EPHEMERA_KILLPRIV_V2=0 turns the negotiation off (the A/B switch)', async () => {
    const saved = process.env.EPHEMERA_KILLPRIV_V2;
    process.env.EPHEMERA_KILLPRIV_V2 = '0';
    try {
      const { m } = await mount();
      expect(m.info.killprivV2).toBe(false);
    } finally {
      if (saved === undefined) delete process.env.EPHEMERA_KILLPRIV_V2;
      else process.env.EPHEMERA_KILLPRIV_V2 = saved;
    }
  });
});
