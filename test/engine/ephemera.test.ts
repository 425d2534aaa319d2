// Function containers on a real dockerd with an Ephemera /tmp: the container gets no device, no
// capability, no privilege; its /tmp is its own FUSE mount served by one node daemon, tied to the
// container's memory cgroup.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, BUSYBOX_RECIPE, FUNCTION_RECIPE, profileFunction, type TmpMode } from '../../engine/index';
import { EphemeraTmpProvider } from '../../node/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { mountUnavailableReason } from '../support/mount';
import { removeNodeDaemonState } from '../support/node-state';

const docker = await ensureDocker();
const labels = testRunLabels('ephemera-tmp');
const why = docker.skipReason ?? mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING Ephemera /tmp container tests: ${why}\n`);

const WRITER = `
import os, time
chunk = b"\\x5a" * (1 << 20)
def write(name, mib):
    with open(os.path.join("/tmp", name), "wb") as f:
        for _ in range(mib):
            f.write(chunk)
def check(name, mib):
    with open(os.path.join("/tmp", name), "rb") as f:
        for _ in range(mib):
            assert f.read(1 << 20) == chunk
t0 = time.monotonic()
write("a", 60); write("b", 60); write("c", 160)
check("a", 60); check("b", 60); check("c", 160)
print(f"done {time.monotonic() - t0:.3f}")
`;

describe.skipIf(why !== undefined)('containers with an Ephemera /tmp', () => {
  let stateDir: string;
  let provider: EphemeraTmpProvider;
  let engine: Engine;
  const images: Record<string, string> = {};

  beforeAll(async () => {
    stateDir = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-node-'));
    provider = await EphemeraTmpProvider.start({ stateDir });
    engine = await Engine.connect({ tmpProvider: provider });
    images.busybox = (await engine.ensureImage(BUSYBOX_RECIPE)).tag;
    images.fn = (await engine.ensureImage(FUNCTION_RECIPE)).tag;
  }, 240_000);

  afterAll(async () => {
    if (engine) await engine.removeManaged(labels);
    await provider?.close();
    if (stateDir) {
      removeNodeDaemonState(stateDir);
    }
  });

  for (const image of ['busybox', 'fn'] as const) {
    it(`${image} image: /tmp is the Ephemera mount; a non-root user creates, reads and removes files; data survives between invocations; removal cleans up`, async () => {
      const fc = await engine.start({ image: images[image]!, command: ['/bin/sh', '-c'], memoryMiB: 64, tmp: { kind: 'bind' }, user: 'fn', labels });
      let stats: Awaited<ReturnType<typeof provider.stats>>;
      try {
        const mounts = await fc.invoke(['cat /proc/mounts']);
        expect(mounts.stdout).toMatch(/^\S+ \/tmp fuse(\.ephemera)? /m);
        const w = await fc.invoke(['id -u && echo hello > /tmp/a && cat /tmp/a && mkdir /tmp/d && mv /tmp/a /tmp/d/b && ls /tmp/d']);
        expect(w.exitCode, w.stderr).toBe(0);
        expect(w.stdout.split('\n')).toEqual(['1000', 'hello', 'b', '']);
        const again = await fc.invoke(['cat /tmp/d/b && rm /tmp/d/b && rmdir /tmp/d && ls -A /tmp | wc -l']);
        expect(again.stdout.trim().split('\n')).toEqual(['hello', '0']);
        stats = await provider.stats(fc.name);
        expect(stats.cgroup).toBe(fc.cgroupPath); // tied to the container's memory cgroup
        expect(fs.existsSync(stats.spillDir)).toBe(true);
        // The node's default: every /tmp has a size quota (a runaway writer stops at it, on a
        // disk tier bounded by it), half of RAM at most a quarter of the disk's free space.
        expect(stats.diskTierBounded).toBe(true);
        expect(provider.sizeQuotaBytes).toBeLessThanOrEqual(os.totalmem() / 2);
        const df = await fc.invoke(['df -k /tmp | tail -1']);
        expect(Number(df.stdout.trim().split(/\s+/)[1]) * 1024).toBe(provider.sizeQuotaBytes);
        console.log(`[ephemera /tmp] ${image}: container ready in ${fc.timings.readyMs} ms (create ${fc.timings.createMs} ms, start ${fc.timings.startMs} ms)`);
      } finally {
        await fc.remove();
      }
      const left = await provider.stats(fc.name).then(() => 'still there', (e: { code?: string }) => e.code);
      expect(left).toBe('E_UNKNOWN_MOUNT');
      // Nothing behind: no container, no cgroup, no mount point, no spill dir, no mount under the state dir.
      expect(await fc.leftovers()).toEqual([]);
      expect(fs.existsSync(stats!.path)).toBe(false);
      expect(fs.existsSync(stats!.spillDir)).toBe(false);
      expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(fc.name);
      expect(await engine.listManaged(labels)).toEqual([]);
    }, 120_000);
  }

  it('a sized /tmp (node --tmp-size): a function writing past it gets ENOSPC, not an OOM kill or a full node disk; removal leaves no loop mount', async () => {
    const sizedState = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-sized-'));
    const sized = await EphemeraTmpProvider.start({ stateDir: sizedState, sizeQuotaBytes: 32 << 20 });
    const sizedEngine = await Engine.connect({ tmpProvider: sized });
    try {
      const fc = await sizedEngine.start({ image: images.busybox!, command: ['/bin/sh', '-c'], memoryMiB: 256, tmp: { kind: 'bind' }, user: 'fn', labels });
      try {
        // A large file on the disk tier (no size hint: new files start there), growing while open.
        const r = await fc.invoke(['dd if=/dev/zero of=/tmp/big bs=1M count=64 2>&1; echo "rc=$?"; df -k /tmp | tail -1']);
        console.log(`[ephemera /tmp] sized: ${r.stdout.trim().split('\n').join(' | ')}`);
        expect(r.stdout).toMatch(/No space left on device/);
        expect(r.stdout).toMatch(/rc=1/);
        expect(r.oomKills).toBe(0);
        expect((await sized.stats(fc.name)).diskTierBounded).toBe(true);
      } finally {
        await fc.remove();
      }
      expect(await fc.leftovers()).toEqual([]);
      // Only the daemon's shared parent of mount points is left (until the daemon stops): no FUSE
      // mount, no memory-tier tmpfs, no disk-tier loop file system.
      const under = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((mp) => mp.startsWith(sizedState));
      expect(under).toEqual([path.join(sizedState, 'mounts')]);
    } finally {
      await sized.close();
      removeNodeDaemonState(sizedState);
    }
  }, 120_000);

  it('a python function in 128 MiB writing 2 × 60 MiB then 160 MiB: 0 OOM kills on Ephemera, OOM-killed on tmpfs, slower on overlay', async () => {
    const run = async (tmp: TmpMode) => {
      const fc = await engine.start({ image: images.fn!, command: ['python3', '-c', WRITER], memoryMiB: 128, tmp, user: 'fn', labels });
      try {
        return await fc.invoke([], { timeoutMs: 120_000 });
      } finally {
        await fc.remove();
      }
    };
    const eph = await run({ kind: 'bind' });
    const tmpfs = await run({ kind: 'tmpfs' });
    const overlay = await run({ kind: 'overlay' });
    const line = (n: string, r: typeof eph) => `${n}: exit ${r.exitCode}, ${r.oomKills} OOM kill(s), ${r.wallMs} ms`;
    console.log(`[ephemera /tmp] ${line('ephemera', eph)}\n[ephemera /tmp] ${line('tmpfs', tmpfs)}\n[ephemera /tmp] ${line('overlay', overlay)}`);
    expect(eph, eph.stderr).toMatchObject({ exitCode: 0, oomKills: 0 });
    expect(eph.stdout).toMatch(/^done /);
    expect(tmpfs.oomKills).toBeGreaterThanOrEqual(1);
    expect(overlay.exitCode).toBe(0);
  }, 300_000);

  it('the profiling run on an Ephemera /tmp (files kept on the disk tier) records U and F within 10 %', async () => {
    const fn = `
import sys, time
buf = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
chunk = b"\\x01" * (1 << 20)
with open("/tmp/big", "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(chunk)
time.sleep(0.05)
`;
    const { profile } = await profileFunction(
      engine,
      { image: images.fn!, command: ['python3', '-c', fn], memoryMiB: 256, tmp: { kind: 'bind' }, user: 'fn', labels },
      [['40', '24'], ['64', '48']],
    );
    const MiB = 1 << 20;
    console.log(`[ephemera /tmp] profile: U ${(profile.peakRssBytes / MiB).toFixed(1)} MiB, F ${(profile.largestFileBytes / MiB).toFixed(1)} MiB`);
    // U: the 64 MiB buffer plus the interpreter (~8–10 MiB); the file pages are not rss.
    expect(profile.peakRssBytes).toBeGreaterThan(64 * MiB);
    expect(profile.peakRssBytes).toBeLessThan(64 * MiB * 1.1 + 12 * MiB);
    expect(Math.abs(profile.largestFileBytes - 48 * MiB)).toBeLessThanOrEqual(48 * MiB * 0.1);
  }, 180_000);
});
