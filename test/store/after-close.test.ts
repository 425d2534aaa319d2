// A file the kernel has just released is movable at once. RELEASE closes the daemon's own fd and
// passthrough backing id after the per-mount lock (so the closer's next request is not held up);
// until both are closed the backing file still looks open to the kernel, and the mapping check (a
// write lease) would take them for a process's mapping: a move right after the release, or a
// reopen for writing that must move the file to disk, was refused as "mapped" (seen in CI as an
// EBUSY from moveNow after openCount reached 0). Each round here waits only for openCount 0, as a
// tier keeper does, and then moves or reopens at once. The window is a few microseconds on an idle
// machine, so each case also runs with it widened to 20 ms (EPHEMERA_TEST_RELEASE_DELAY_US, read by
// the native mount when it opens): before the fix every such case failed in its first round.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EphemeraMount } from '../../fusefs/mount';
import { cleanupDir, mountUnavailableReason } from '../support/mount';
import { closeMountChecked } from '../support/protocol';

const MiB = 1 << 20;
const ROUNDS = 150;
const why = mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING after-close move tests: ${why}\n`);

describe.skipIf(why !== undefined)('a file just released moves at once', () => {
  let base: string;
  let m: EphemeraMount | undefined;
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-after-close-'));
  });
  afterEach(async () => {
    const mount = m;
    m = undefined;
    await closeMountChecked(mount);
  });
  afterAll(() => {
    for (const d of fs.readdirSync(base)) cleanupDir(path.join(base, d));
    fs.rmSync(base, { recursive: true, force: true });
  });

  async function open(name: string, mode: 'passthrough' | 'writeback', delayUs: number): Promise<EphemeraMount> {
    const dir = path.join(base, name);
    const spill = path.join(base, `${name}-spill`);
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(spill, { recursive: true, mode: 0o700 });
    process.env.EPHEMERA_TEST_RELEASE_DELAY_US = String(delayUs);
    try {
      m = await EphemeraMount.open({ mountpoint: dir, spillDir: spill, mode });
    } finally {
      delete process.env.EPHEMERA_TEST_RELEASE_DELAY_US;
    }
    // Room for new files in memory, no reserve: every file starts on the memory tier.
    m.setPlacement({ memoryBudget: 256 * MiB, newFileRoom: 256 * MiB, reservePerOpenFile: 0 });
    return m;
  }

  async function released(mount: EphemeraMount, ino: number): Promise<void> {
    const deadline = Date.now() + 5000;
    // Polled tightly: the point is to act in the window right after the release.
    while (mount.inodeStats().find((s) => s.ino === ino)?.openCount !== 0) {
      if (Date.now() > deadline) throw new Error(`inode ${ino} still open after 5 s`);
      await new Promise((r) => setImmediate(r));
    }
  }

  const cases = [
    { delayUs: 0, rounds: ROUNDS, label: '' },
    { delayUs: 20_000, rounds: 20, label: ', closes 20 ms after the reply' },
  ];
  for (const mode of ['passthrough', 'writeback'] as const) for (const { delayUs, rounds, label } of cases) {
    it(`${mode}${label}: written, closed, moved to disk and back, ${rounds} times: every move OK, bytes intact`, async () => {
      const mount = await open(`move-${mode}-${delayUs}`, mode, delayUs);
      if (mode === 'passthrough' && mount.mode !== 'passthrough') console.warn(`!!! passthrough unavailable here, ran in ${mount.mode}`);
      const file = path.join(mount.mountpoint, 'f');
      const codes: Record<string, number> = {};
      for (let i = 0; i < rounds; i++) {
        const body = Buffer.alloc(64 * 1024, i & 0xff);
        fs.writeFileSync(file, body);
        const ino = fs.statSync(file).ino;
        await released(mount, ino);
        const toDisk = (await mount.moveNow(ino, 'disk')).code;
        codes[toDisk] = (codes[toDisk] ?? 0) + 1;
        expect(toDisk, `round ${i}: move to disk right after the release`).toBe('OK');
        expect(fs.readFileSync(file).equals(body)).toBe(true);
        await released(mount, ino);
        expect((await mount.moveNow(ino, 'memory')).code, `round ${i}: back to memory after a read`).toBe('OK');
      }
      console.log(`[after-close] ${mode}${label}: ${rounds} rounds, moves to disk ${JSON.stringify(codes)}, refused as mapped ${mount.usage().movesRefusedMapped}`);
      expect(mount.usage().movesRefusedMapped).toBe(0);
    });
  }

  for (const { delayUs, rounds, label } of cases)
  it(`passthrough${label}: a file reopened for writing right after its release, with no room in memory, goes to disk (${rounds} times)`, async () => {
    const mount = await open(`reopen-${delayUs}`, 'passthrough', delayUs);
    const file = path.join(mount.mountpoint, 'log');
    fs.writeFileSync(file, Buffer.alloc(MiB, 1));
    const ino = fs.statSync(file).ino;
    let onDisk = 0;
    for (let i = 0; i < rounds; i++) {
      await released(mount, ino);
      if (mount.inodeStats().find((s) => s.ino === ino)!.tier === 'disk') {
        expect((await mount.moveNow(ino, 'memory')).code).toBe('OK');
        await released(mount, ino);
      }
      // No room: an open for writing moves the file to disk before answering.
      mount.setPlacement({ memoryBudget: 0, newFileRoom: 0, reservePerOpenFile: 0 });
      const fd = fs.openSync(file, 'a');
      const tier = mount.inodeStats().find((s) => s.ino === ino)!.tier;
      fs.writeSync(fd, 'x');
      fs.closeSync(fd);
      mount.setPlacement({ memoryBudget: 256 * MiB, newFileRoom: 256 * MiB, reservePerOpenFile: 0 });
      expect(tier, `round ${i}: reopened for appending with no room`).toBe('disk');
      onDisk++;
    }
    expect(onDisk).toBe(rounds);
    expect(fs.statSync(file).size).toBe(MiB + rounds);
    expect(mount.usage().admittedUnmovable).toBe(0);
  });
});
