import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SizedDiskTier } from '../../fusefs/daemon/disk-tier';
import { isMountPoint } from '../../fusefs/memtier';
import { skipLoudly } from '../support/mount';
import { loopDeviceUnavailable, skipping } from '../support/capabilities';

const MiB = 1 << 20;
const noLoop = loopDeviceUnavailable();
const skip = skipLoudly('sized disk tier (loop ext4)') || (noLoop !== undefined && skipping('sized disk tier (loop ext4)', noLoop) !== undefined);

/** Writes `bytes` in 1 MiB chunks; returns how many got written before an error, and the error code. */
function fill(file: string, bytes: number): { written: number; code?: string } {
  const fd = fs.openSync(file, 'a');
  let written = 0;
  try {
    const chunk = Buffer.alloc(MiB, 1);
    while (written < bytes) written += fs.writeSync(fd, chunk, 0, Math.min(MiB, bytes - written));
    fs.fsyncSync(fd);
    return { written };
  } catch (e) {
    return { written, code: (e as NodeJS.ErrnoException).code };
  } finally {
    fs.closeSync(fd);
  }
}

describe.skipIf(skip)('SizedDiskTier: the disk tier bounded by the size quota', () => {
  const made: SizedDiskTier[] = [];
  const dirs: string[] = [];
  afterEach(() => {
    for (const t of made.splice(0)) t.close();
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const spillDir = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'eph-disk-tier-'));
    dirs.push(d);
    return d;
  };

  it('answers ENOSPC at the quota, grows and shrinks at run time, refuses a size below its files, leaves nothing', () => {
    const spill = spillDir();
    const tier = SizedDiskTier.create(spill, 16 * MiB);
    made.push(tier);
    expect(isMountPoint(tier.dir)).toBe(true);
    expect(fs.statSync(tier.dir).mode & 0o777).toBe(0o700);
    const a = fill(path.join(tier.dir, '1.spill'), 24 * MiB);
    expect(a.code).toBe('ENOSPC');
    expect(a.written).toBeGreaterThanOrEqual(15 * MiB);
    expect(a.written).toBeLessThanOrEqual(16 * MiB);
    expect(tier.usedBytes()).toBeLessThanOrEqual(16 * MiB);
    tier.resize(48 * MiB); // within the sparse image: no online resize needed
    const b = fill(path.join(tier.dir, '2.spill'), 24 * MiB);
    expect(b.code).toBeUndefined();
    expect(fill(path.join(tier.dir, '3.spill'), 24 * MiB).code).toBe('ENOSPC');
    expect(() => tier.resize(8 * MiB)).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    fs.rmSync(path.join(tier.dir, '3.spill'));
    fs.rmSync(path.join(tier.dir, '2.spill'));
    tier.resize(20 * MiB); // lower: the reserve takes the rest
    const c = fill(path.join(tier.dir, '4.spill'), 8 * MiB);
    expect(c.code).toBe('ENOSPC');
    expect(c.written).toBeLessThanOrEqual(5 * MiB);
    tier.close();
    made.pop();
    expect(isMountPoint(tier.dir)).toBe(false);
    expect(fs.readdirSync(spill)).toEqual([]);
  });

  it('replaces a dead daemon’s tier left mounted at the same place', () => {
    const spill = spillDir();
    const old = SizedDiskTier.create(spill, 8 * MiB);
    fs.writeFileSync(path.join(old.dir, 'stale.spill'), 'x');
    const fresh = SizedDiskTier.create(spill, 8 * MiB); // as after a crash: nobody closed `old`
    made.push(fresh);
    expect(fs.readdirSync(fresh.dir).filter((n) => n.endsWith('.spill'))).toEqual([]);
    expect(fill(path.join(fresh.dir, 'x.spill'), 4 * MiB).code).toBeUndefined();
  });
});
