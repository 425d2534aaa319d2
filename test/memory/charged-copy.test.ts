import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ChargedCopier, MemoryCgroup, isMemoryCgroupError } from '../../fusefs/memory';
import { cgroupV1Unavailable, createTestCgroup, removeAllTestCgroups } from '../support/cgroups';
import { buildChargedCopyHelper } from './fixtures/build';
import { waitFor } from './fixtures/wait';

const MiB = 1024 * 1024;
const COPY_BYTES = 64 * MiB;
const unavailable = cgroupV1Unavailable();
if (unavailable !== undefined) console.warn(`\n!!! SKIPPING charged-copy cgroup tests: ${unavailable}\n`);

describe.skipIf(unavailable !== undefined)('charged copy: promotions are charged to the container cgroup', () => {
  let workDir: string;
  let sourcePath: string;
  let sourceHash: string;
  let helperPath: string;
  const openFds: number[] = [];
  const shmFiles: string[] = [];
  const copiers: ChargedCopier[] = [];

  beforeAll(() => {
    helperPath = buildChargedCopyHelper();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-charged-copy-'));
    sourcePath = path.join(workDir, 'disk-tier-file');
    const block = randomBytes(MiB);
    const fd = fs.openSync(sourcePath, 'w');
    const hash = createHash('sha256');
    for (let i = 0; i < COPY_BYTES / MiB; i++) {
      block[0] = i;
      fs.writeSync(fd, block);
      hash.update(block);
    }
    fs.closeSync(fd);
    sourceHash = hash.digest('hex');
  });

  afterEach(async () => {
    for (const copier of copiers.splice(0)) await copier.close();
    for (const fd of openFds.splice(0)) fs.closeSync(fd);
    // Unlinking frees the shmem pages, which uncharges them before the cgroup goes.
    for (const file of shmFiles.splice(0)) fs.rmSync(file, { force: true });
    await removeAllTestCgroups();
  });

  afterAll(() => {
    if (workDir !== undefined) fs.rmSync(workDir, { recursive: true, force: true });
  });

  function openPair(): { src: number; dst: number; dstPath: string } {
    const src = fs.openSync(sourcePath, 'r');
    openFds.push(src);
    const dstPath = path.join('/dev/shm', `ephemera-charged-copy-${process.pid}-${shmFiles.length}`);
    shmFiles.push(dstPath);
    const dst = fs.openSync(dstPath, 'w+');
    openFds.push(dst);
    return { src, dst, dstPath };
  }

  function hashFile(file: string): string {
    return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  }

  it('a copy by the helper lands on the target cgroup as shmem, not on the caller', async () => {
    const target = await createTestCgroup();
    const own = MemoryCgroup.fromPid('self');
    try {
      const { src, dst, dstPath } = openPair();
      const copier = ChargedCopier.forCgroup(target.dir, { helperPath });
      copiers.push(copier);
      expect(ChargedCopier.forCgroup(target.dir)).toBe(copier);

      const targetBefore = target.cgroup.usage().shmemBytes;
      const ownBefore = own.usage({ hierarchical: false }).shmemBytes;
      const started = performance.now();
      const copied = await copier.copy(src, dst, COPY_BYTES);
      const elapsedMs = performance.now() - started;
      const targetGrowth = target.cgroup.usage().shmemBytes - targetBefore;
      const ownGrowth = own.usage({ hierarchical: false }).shmemBytes - ownBefore;
      console.log(
        `charged copy of 64 MiB: ${elapsedMs.toFixed(0)} ms; target shmem +${(targetGrowth / MiB).toFixed(1)} MiB, ` +
          `caller's cgroup (local) shmem +${(ownGrowth / MiB).toFixed(1)} MiB`,
      );

      expect(copied).toBe(COPY_BYTES);
      expect(targetGrowth).toBeGreaterThanOrEqual(COPY_BYTES * 0.9);
      expect(targetGrowth).toBeLessThanOrEqual(COPY_BYTES * 1.1);
      expect(ownGrowth).toBeLessThan(COPY_BYTES * 0.1);
      expect(hashFile(dstPath)).toBe(sourceHash);

      const helperPid = await copier.helperPid();
      expect(helperPid).toBeDefined();
      expect(MemoryCgroup.fromPid(helperPid!).dir).toBe(target.dir);
      // The file offsets the daemon shares with the helper did not move.
      expect(fs.readSync(src, Buffer.alloc(1), 0, 1, null)).toBe(1);
    } finally {
      own.close();
    }
  });

  it('the converse: a plain in-process copy is charged to the caller, not the target', async () => {
    const target = await createTestCgroup();
    const own = MemoryCgroup.fromPid('self');
    try {
      const { src, dst, dstPath } = openPair();
      const targetBefore = target.cgroup.usage().shmemBytes;
      const ownBefore = own.usage({ hierarchical: false }).shmemBytes;
      const buffer = Buffer.allocUnsafe(MiB);
      for (let offset = 0; offset < COPY_BYTES; offset += MiB) {
        const n = fs.readSync(src, buffer, 0, MiB, offset);
        fs.writeSync(dst, buffer, 0, n, offset);
      }
      const targetGrowth = target.cgroup.usage().shmemBytes - targetBefore;
      const ownGrowth = own.usage({ hierarchical: false }).shmemBytes - ownBefore;
      console.log(
        `in-process copy of 64 MiB: target shmem +${(targetGrowth / MiB).toFixed(1)} MiB, caller's cgroup (local) shmem +${(ownGrowth / MiB).toFixed(1)} MiB`,
      );
      expect(targetGrowth).toBeLessThan(COPY_BYTES * 0.1);
      expect(ownGrowth).toBeGreaterThanOrEqual(COPY_BYTES * 0.9);
      expect(ownGrowth).toBeLessThanOrEqual(COPY_BYTES * 1.1);
      expect(hashFile(dstPath)).toBe(sourceHash);
    } finally {
      own.close();
    }
  });

  it('reports errors per request and keeps serving; the helper exits when idle', async () => {
    const target = await createTestCgroup();
    const { src, dst } = openPair();
    const copier = ChargedCopier.forCgroup(target.dir, { helperPath, idleExitMs: 100 });
    copiers.push(copier);
    const notAnFd = 1_000_000;
    await expect(copier.copy(notAnFd, dst, 10)).rejects.toMatchObject({ code: 'E_COPY', details: { errno: 'EBADF' } });
    expect(await copier.copy(src, dst, 4096, { srcOffset: COPY_BYTES - 1000 })).toBe(1000);
    const pid = await copier.helperPid();
    expect(pid).toBeDefined();
    await waitFor(() => !isAlive(pid!), 3_000);
    // The next copy starts a new helper.
    expect(await copier.copy(src, dst, 10)).toBe(10);
    expect(await copier.helperPid()).not.toBe(pid);
  });

  it('fails with stable codes: no cgroup, helper not built, bad arguments', async () => {
    let caught: unknown;
    try {
      ChargedCopier.forCgroup('/nonexistent/cgroup');
    } catch (err) {
      caught = err;
    }
    expect(isMemoryCgroupError(caught, 'E_NO_CGROUP')).toBe(true);
    const target = await createTestCgroup();
    const missing = ChargedCopier.forCgroup(target.dir, { helperPath: '/nonexistent/charged-copy' });
    copiers.push(missing);
    await expect(missing.copy(0, 1, 1)).rejects.toMatchObject({ code: 'E_HELPER' });
    await expect(missing.copy(-1, 1, 1)).rejects.toMatchObject({ code: 'E_BAD_CONFIG' });
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}
