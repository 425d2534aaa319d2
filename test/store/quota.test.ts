// The size quota counts both tiers as one, as a tmpfs of the same size= counts its pages: each case
// runs on a node-daemon mount (memory tier + sized disk tier) and on a plain tmpfs of the quota's
// size, and ENOSPC must come at the same byte count (within a few blocks: the names of the files
// count against the quota here, and each tier rounds to its page or block).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonClient } from '../../fusefs/daemon/client';
import { cleanupStateDir, makeStateDir, MiB, startDaemon, type TestDaemon } from '../daemon/support';
import { skipLoudly } from '../support/mount';
import { loopDeviceUnavailable, skipping } from '../support/capabilities';
import { makeTmpfs, type TestDir } from '../support/tmpdirs';

const noLoop = loopDeviceUnavailable();
const skip = skipLoudly('size quota across tiers') || (noLoop !== undefined && skipping('size quota across tiers', noLoop) !== undefined);

const QUOTA = 64 * MiB;
/** Slack for rounding: a few 4 KiB blocks (names, the ext4 extent blocks of a 48 MiB file). */
const SLACK = 16 * 4096;

/**
 * Writes up to `bytes` in 1 MiB chunks, then, after the first ENOSPC, in 4 KiB ones: ext4 (the disk
 * tier) refuses a write whole when its large folio does not fit, so 4 KiB writes measure the room to
 * the block, as a program writing 4 KiB at a time sees it. Bytes written and the last error code.
 */
function fill(file: string, bytes: number, flags = 'w'): { written: number; code: string | null } {
  const fd = fs.openSync(file, flags);
  const chunk = Buffer.alloc(MiB, 0x5a);
  let written = 0;
  let step = MiB;
  let code: string | null = null;
  try {
    while (written < bytes) {
      try {
        const n = fs.writeSync(fd, chunk, 0, Math.min(step, bytes - written));
        written += n;
        if (n === 0) break;
      } catch (e) {
        code = (e as NodeJS.ErrnoException).code ?? 'unknown';
        if (code !== 'ENOSPC' || step === 4096) break;
        step = 4096;
      }
    }
    return { written, code: written < bytes ? code : null };
  } finally {
    fs.closeSync(fd);
  }
}

/** Used bytes as `df` shows them (1 KiB blocks). */
function dfUsed(dir: string): number {
  const out = execFileSync('df', ['--output=used', '-k', dir], { encoding: 'utf8' }).trim().split('\n')[1]!;
  return Number(out) * 1024;
}

function clear(dir: string): void {
  for (const n of fs.readdirSync(dir)) fs.rmSync(path.join(dir, n), { force: true, recursive: true });
}

const settle = () => new Promise((r) => setTimeout(r, 100));

describe.skipIf(skip)('size quota: memory tier + disk tier count as one, like a tmpfs of that size', () => {
  let stateDir: string;
  let daemon: TestDaemon;
  let client: DaemonClient;
  let mountPath: string;
  let tmpfs: TestDir;

  beforeAll(async () => {
    stateDir = makeStateDir();
    daemon = await startDaemon(stateDir);
    client = await daemon.client();
    // Budget 48 MiB: a 48 MiB file stays in memory, the next new file goes to the disk tier.
    const { mount } = await client.addMount({ id: 'quota', budget: 48 * MiB, sizeQuota: QUOTA, inodeQuota: 0, owner: 'test' });
    expect(mount.diskTierBounded).toBe(true);
    mountPath = mount.path;
    tmpfs = await makeTmpfs({ size: `${QUOTA}` });
  });
  afterAll(async () => {
    client?.close();
    await daemon?.stop();
    if (stateDir) cleanupStateDir(stateDir);
    await tmpfs?.teardown();
  });

  /** Runs `scenario` on both; returns [mount's result, tmpfs's result]. */
  async function onBoth<T>(scenario: (dir: string) => Promise<T> | T): Promise<[T, T]> {
    clear(mountPath);
    clear(tmpfs.dir);
    await settle();
    const ours = await scenario(mountPath);
    const ref = await scenario(tmpfs.dir);
    return [ours, ref];
  }

  it('48 MiB kept in memory, then a file on the disk tier: ENOSPC where tmpfs gives it, df sums both tiers', async () => {
    const [ours, ref] = await onBoth(async (dir) => {
      const a = fill(path.join(dir, 'a'), 48 * MiB);
      await settle();
      const b = fill(path.join(dir, 'b'), 48 * MiB);
      await settle();
      return { a, b, used: dfUsed(dir) };
    });
    const s = await client.stats('quota');
    process.stderr.write(`quota across tiers: mount wrote b=${ours.b.written} (${ours.b.code}), df used ${ours.used}; tmpfs b=${ref.b.written} (${ref.b.code}), df used ${ref.used}; tiers ${JSON.stringify(s.bytes)}\n`);
    expect(ours.a.code).toBeNull();
    expect(s.bytes.memory).toBeGreaterThanOrEqual(48 * MiB); // a is on the memory tier
    expect(s.bytes.disk).toBeGreaterThan(0); // b went to the disk tier
    expect(ref.b.code).toBe('ENOSPC');
    expect(ours.b.code).toBe('ENOSPC');
    expect(Math.abs(ours.b.written - ref.b.written)).toBeLessThanOrEqual(SLACK);
    expect(s.bytes.memory + s.bytes.disk).toBeLessThanOrEqual(QUOTA);
    expect(Math.abs(ours.used - (s.bytes.memory + s.bytes.disk))).toBeLessThanOrEqual(SLACK);
    expect(Math.abs(ours.used - ref.used)).toBeLessThanOrEqual(SLACK);
  });

  it('a spill moves bytes without counting them twice or losing them: the room after it is the room before it', async () => {
    const [ours, ref] = await onBoth(async (dir) => {
      fill(path.join(dir, 'a'), 24 * MiB);
      await settle();
      const usedBefore = dfUsed(dir);
      if (dir === mountPath) {
        await client.setBudget('quota', 0); // a moves to the disk tier
        const s = await client.stats('quota');
        expect(s.bytes.memory).toBe(0);
        expect(s.bytes.disk).toBeGreaterThanOrEqual(24 * MiB);
      }
      const usedAfter = dfUsed(dir);
      const b = fill(path.join(dir, 'b'), 64 * MiB);
      if (dir === mountPath) await client.setBudget('quota', 48 * MiB);
      return { usedBefore, usedAfter, b };
    });
    expect(Math.abs(ours.usedAfter - ours.usedBefore)).toBeLessThanOrEqual(SLACK);
    expect(ours.b.code).toBe('ENOSPC');
    expect(Math.abs(ours.b.written - ref.b.written)).toBeLessThanOrEqual(SLACK);
  });

  it('truncate up and sparse files take no room (tmpfs counts allocated blocks); fallocate does', async () => {
    const [ours, ref] = await onBoth(async (dir) => {
      // Apparent size far past the quota: allowed, as on tmpfs.
      const sparse = path.join(dir, 'sparse');
      fs.writeFileSync(sparse, '');
      let truncate: string | null = null;
      try {
        fs.truncateSync(sparse, 4 * QUOTA);
      } catch (e) {
        truncate = (e as NodeJS.ErrnoException).code ?? 'unknown';
      }
      // Data in the middle of the hole: only those blocks count.
      const fd = fs.openSync(sparse, 'r+');
      fs.writeSync(fd, Buffer.alloc(8 * MiB, 1), 0, 8 * MiB, 2 * QUOTA);
      fs.closeSync(fd);
      await settle();
      // posix_fallocate through fallocate(1): allocates, so it counts, and it is refused past the room.
      const falloc = (name: string, bytes: number): string | null => {
        try {
          execFileSync('fallocate', ['-l', String(bytes), path.join(dir, name)], { stdio: 'pipe' });
          return null;
        } catch (e) {
          return /No space left/.test(String((e as { stderr?: Buffer }).stderr)) ? 'ENOSPC' : String(e);
        }
      };
      const f1 = falloc('f1', 40 * MiB);
      await settle();
      const f2 = falloc('f2', 40 * MiB); // 8 + 40 + 40 > 64
      await settle();
      const rest = fill(path.join(dir, 'rest'), QUOTA);
      return { truncate, f1, f2, rest, used: dfUsed(dir), size: fs.statSync(sparse).size };
    });
    const st = await client.stats('quota', true);
    process.stderr.write(`sparse/fallocate: mount ${JSON.stringify(ours)}; tmpfs ${JSON.stringify(ref)}; tiers ${JSON.stringify(st.bytes)} ${JSON.stringify(st.inodeTable)}\n`);
    expect(ref.truncate).toBeNull();
    expect(ours.truncate).toBeNull();
    expect(ours.size).toBe(ref.size);
    expect(ref.f1).toBeNull();
    expect(ours.f1).toBeNull();
    expect(ref.f2).toBe('ENOSPC');
    expect(ours.f2).toBe('ENOSPC');
    expect(ours.rest.code).toBe('ENOSPC');
    expect(Math.abs(ours.rest.written - ref.rest.written)).toBeLessThanOrEqual(SLACK);
    expect(Math.abs(ours.used - ref.used)).toBeLessThanOrEqual(SLACK);
  });
});
