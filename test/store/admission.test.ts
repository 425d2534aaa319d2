// The native side only enforces the memory tier's admission that the tier keeper pushes
// (policy.placementAdmission): for each case the tier a new file (or a file opened for writing)
// gets on a real mount is the one policy.admitsNewFile / admitsOpenForWrite predict.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EphemeraMount } from '../../fusefs/mount';
import { admitsNewFile, admitsOpenForWrite, type MemoryAdmission } from '../../policy';
import { cleanupDir, mountUnavailableReason } from '../support/mount';
import { closeMountChecked } from '../support/protocol';

const MiB = 1 << 20;
const why = mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING native admission tests: ${why}\n`);

describe.skipIf(why !== undefined)('native admission follows the room the keeper pushes', () => {
  let base: string;
  let m: EphemeraMount | undefined;
  const fds: number[] = [];
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-admission-'));
  });
  afterEach(async () => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
    const mount = m;
    m = undefined;
    await closeMountChecked(mount);
  });
  afterAll(() => {
    for (const d of fs.readdirSync(base)) cleanupDir(path.join(base, d));
    fs.rmSync(base, { recursive: true, force: true });
  });

  async function open(name: string): Promise<{ mount: EphemeraMount; dir: string }> {
    const dir = path.join(base, name);
    const spill = path.join(base, `${name}-spill`);
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(spill, { recursive: true, mode: 0o700 });
    m = await EphemeraMount.open({ mountpoint: dir, spillDir: spill });
    return { mount: m, dir };
  }
  const push = (mount: EphemeraMount, a: MemoryAdmission) =>
    mount.setPlacement({ memoryBudget: a.memoryCapBytes, newFileRoom: a.newFileRoomBytes, reservePerOpenFile: a.reservePerOpenFileBytes });
  const tierOf = (mount: EphemeraMount, file: string) => {
    const ino = fs.statSync(file).ino;
    const row = mount.inodeStats().find((s) => s.ino === ino);
    if (!row) throw new Error(`no inode row for ${file}`);
    return row.tier;
  };
  const openMemoryFiles = (mount: EphemeraMount) => mount.inodeStats().filter((s) => s.tier === 'memory' && s.openCount > 0).length;
  const admission = (room: number, reserve: number): MemoryAdmission => ({
    newFileRoomBytes: room,
    reservePerOpenFileBytes: reserve,
    memoryCapBytes: room,
    reason: 'size-hint',
  });

  it('no reserve: new files in memory while the tier holds less than the room; room 0: on disk', async () => {
    const { mount, dir } = await open('plain');
    const a = admission(4 * MiB, 0);
    push(mount, a);
    for (const [i, mib] of [[1, 3], [2, 2], [3, 1]] as const) {
      const predicted = admitsNewFile(a, mount.tierBytes().memory, openMemoryFiles(mount)) ? 'memory' : 'disk';
      const f = path.join(dir, `f${i}`);
      fs.writeFileSync(f, Buffer.alloc(mib * MiB, i));
      expect(tierOf(mount, f)).toBe(predicted);
    }
    // 3 MiB then 2 MiB in memory (the second created at 3 < 4), the third on disk (5 ≥ 4).
    expect([1, 2, 3].map((i) => tierOf(mount, path.join(dir, `f${i}`)))).toEqual(['memory', 'memory', 'disk']);
    push(mount, admission(0, 0));
    fs.writeFileSync(path.join(dir, 'g'), 'x');
    expect(tierOf(mount, path.join(dir, 'g'))).toBe('disk');
  });

  it('with a reserve: each open memory-tier file counts at it, so two open files leave a third no room', async () => {
    const { mount, dir } = await open('reserve');
    const a = admission(10 * MiB, 4 * MiB);
    push(mount, a);
    const tiers: string[] = [];
    for (const name of ['a', 'b', 'c']) {
      const predicted = admitsNewFile(a, mount.tierBytes().memory, openMemoryFiles(mount)) ? 'memory' : 'disk';
      const file = path.join(dir, name);
      fds.push(fs.openSync(file, 'w'));
      expect(tierOf(mount, file)).toBe(predicted);
      tiers.push(tierOf(mount, file));
    }
    expect(tiers).toEqual(['memory', 'memory', 'disk']);
  });

  it('open for writing: a closed memory-tier file that no longer fits the room moves to disk first', async () => {
    const { mount, dir } = await open('reopen');
    const file = path.join(dir, 'log');
    fs.writeFileSync(file, Buffer.alloc(3 * MiB, 1));
    expect(tierOf(mount, file)).toBe('memory');
    const fits = admission(8 * MiB, 4 * MiB);
    push(mount, fits);
    const row = () => mount.inodeStats().find((s) => s.ino === fs.statSync(file).ino)!;
    const own = { sizeBytes: row().size, allocatedBytes: row().allocated };
    expect(admitsOpenForWrite(fits, mount.tierBytes().memory, own, 0)).toBe(true);
    fs.closeSync(fs.openSync(file, 'a'));
    expect(tierOf(mount, file)).toBe('memory');
    const tight = admission(3 * MiB, 4 * MiB);
    push(mount, tight);
    expect(admitsOpenForWrite(tight, mount.tierBytes().memory, own, 0)).toBe(false);
    const before = mount.usage().demotedAtOpen;
    fs.closeSync(fs.openSync(file, 'a'));
    expect(tierOf(mount, file)).toBe('disk');
    expect(mount.usage().demotedAtOpen).toBe(before + 1);
    expect(fs.readFileSync(file).equals(Buffer.alloc(3 * MiB, 1))).toBe(true);
  });
});
