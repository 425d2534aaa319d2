// The memory adapter with a real cgroup v1 and a real mount: the store lives inside the
// container's memory, is counted there, spills before the kernel would kill, and shrinks on
// request. The "container" is a process moved into a test cgroup before it runs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { EphemeraMount } from '../../fusefs/mount';
import { DEFAULT_POLICY_CONFIG } from '../../policy';
import { MemoryCgroup } from '../../fusefs/memory';
import { cgroupV1Unavailable, createTestCgroup, killAndWait, removeAllTestCgroups, spawnInCgroup, type HeldProcess, type TestCgroup } from '../support/cgroups';
import { buildAllocator } from '../memory/fixtures/build';
import { cleanupDir, mountUnavailableReason } from '../support/mount';
import { closeMountsChecked } from '../support/protocol';
import { until } from '../support/wait';

const MiB = 1 << 20;
const WRITER = path.join(__dirname, 'writer.py');
const why = cgroupV1Unavailable() ?? mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING memory adapter tests: ${why}\n`);

function shmemAndRss(cg: MemoryCgroup, hierarchical = true) {
  const u = cg.usage({ hierarchical });
  return u.rssBytes + u.shmemBytes;
}
describe.skipIf(why !== undefined)('memory adapter (real cgroup v1, real mount)', () => {
  let base: string;
  let mount: EphemeraMount | undefined;
  let cg: TestCgroup | undefined;
  let child: HeldProcess | undefined;

  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-adapter-'));
    fs.chmodSync(base, 0o755);
  });
  afterEach(async () => {
    await killAndWait(child);
    child = undefined;
    const protocol = await closeMountsChecked([mount]);
    mount = undefined;
    await cg?.remove();
    cg = undefined;
    await removeAllTestCgroups();
    protocol.assert();
  });
  afterAll(() => {
    for (const d of fs.readdirSync(base)) cleanupDir(path.join(base, d));
    fs.rmSync(base, { recursive: true, force: true });
  });

  async function open(name: string) {
    const dir = path.join(base, name);
    fs.mkdirSync(dir, { recursive: true });
    const spill = path.join(base, `${name}-spill`);
    fs.mkdirSync(spill, { recursive: true, mode: 0o700 });
    return EphemeraMount.open({ mountpoint: dir, spillDir: spill, allowOther: true });
  }

  it('128 MiB container: 2 × 60 MiB then 160 MiB finish with 0 OOM kills, overflow on disk; tmpfs in the same cgroup is OOM-killed', async () => {
    cg = await createTestCgroup({ limitBytes: 128 * MiB });
    mount = await open('fill');
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir });
    child = spawnInCgroup(cg.cgroup, 'python3', [WRITER, mount.mountpoint, '60,60,160']);
    const exit = await child.exited;
    const out = child.stdoutText().trim();
    expect(exit, out).toBe(0);
    expect(JSON.parse(out).ok).toBe(true);
    expect(cg.cgroup.oomState().oomKills).toBe(0);
    // All three were just written: the disk tier's working set (280 MiB) is owed the page cache
    // until it has been idle for the working-set window; then a 60 MiB file fits and comes back.
    await until(() => adapter.stats.promotions >= 1, 5000 + DEFAULT_POLICY_CONFIG.placement.workingSetWindowMs, 'a 60 MiB file promoted after close');
    const stats = mount.inodeStats();
    const mem = stats.filter((s) => s.tier === 'memory');
    const disk = stats.filter((s) => s.tier === 'disk');
    const tiers = mount.tierBytes();
    console.log(`[adapter] 128 MiB: memory tier ${(tiers.memory / MiB).toFixed(0)} MiB in ${mem.length} file(s), disk tier ${(tiers.disk / MiB).toFixed(0)} MiB, promotions ${adapter.stats.promotions}, ${JSON.parse(out).seconds.toFixed(2)} s`);
    expect(disk.some((s) => s.size === 160 * MiB)).toBe(true); // the overflow is on disk
    expect(mem.every((s) => s.size === 60 * MiB)).toBe(true); //  a 60 MiB file fits, so it came back
    expect(mem.length).toBeGreaterThanOrEqual(1);
    expect(tiers.memory).toBeLessThanOrEqual(adapter.usage().markBytes);

    // The same function on a 160 MiB tmpfs in the same cgroup dies: the tmpfs pages cannot move.
    const tmpfs = path.join(base, 'tmpfs');
    fs.mkdirSync(tmpfs, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=160m', 'ephemera-test', tmpfs]);
    try {
      const killsBefore = cg.cgroup.oomState().oomKills;
      child = spawnInCgroup(cg.cgroup, 'python3', [WRITER, tmpfs, '60,60,160']);
      const code = await child.exited;
      expect(code).not.toBe(0);
      expect(cg.cgroup.oomState().oomKills).toBeGreaterThan(killsBefore);
    } finally {
      execFileSync('umount', ['-l', tmpfs]);
    }
  });

  it('with a size hint that fits once, a second file open at the same time goes to disk: 2 × 100 MiB at once in 150 MiB, 0 OOM kills', async () => {
    cg = await createTestCgroup({ limitBytes: 150 * MiB });
    mount = await open('two-open');
    // 1.1 × 100 MiB fits under 150 MiB − headroom − the writer once, not twice.
    await mount.attachCgroupBudget({ cgroupPath: cg.dir, sizeHintBytes: 100 * MiB });
    await new Promise((r) => setTimeout(r, 100));
    const py = [
      'import os',
      `a = os.open('${mount.mountpoint}/a', os.O_WRONLY | os.O_CREAT, 0o644)`,
      `b = os.open('${mount.mountpoint}/b', os.O_WRONLY | os.O_CREAT, 0o644)`,
      'chunk = b"z" * (1 << 20)',
      'for _ in range(100):',
      '    os.write(a, chunk); os.write(b, chunk)',
      'os.close(a); os.close(b)',
      `print(os.stat('${mount.mountpoint}/a').st_size + os.stat('${mount.mountpoint}/b').st_size)`,
    ].join('\n');
    child = spawnInCgroup(cg.cgroup, 'python3', ['-c', py]);
    const code = await child.exited;
    expect(code, child.stdoutText()).toBe(0);
    expect(child.stdoutText().trim()).toBe(String(200 * MiB));
    expect(cg.cgroup.oomState().oomKills).toBe(0);
  });

  it('accounting: 64 MiB written through the mount lands on the writer cgroup, not the daemon; a promotion too', async () => {
    cg = await createTestCgroup({ limitBytes: 512 * MiB });
    mount = await open('acct');
    // The daemon (this worker process and its native serving threads) gets a cgroup of its own, so
    // its counters hold its charges only, not those of every other process of the session.
    const home = MemoryCgroup.fromPid('self');
    const daemonCg = await createTestCgroup();
    daemonCg.cgroup.addProcess(process.pid);
    try {
    const daemon = daemonCg.cgroup;
    // A size hint that fits sends new files straight to the memory tier (charged to the writer).
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir, sizeHintBytes: 64 * MiB });
    await until(() => adapter.usage().markBytes > 0, 2000, 'adapter started');
    await new Promise((r) => setTimeout(r, 100));
    const before = shmemAndRss(cg.cgroup);
    const daemonBefore = shmemAndRss(daemon, false);
    child = spawnInCgroup(cg.cgroup, 'sh', ['-c', `dd if=/dev/zero of=${mount.mountpoint}/a bs=1M count=64 status=none && sleep 30`]);
    await until(() => fs.existsSync(`${mount!.mountpoint}/a`) && fs.statSync(`${mount!.mountpoint}/a`).size === 64 * MiB, 10000, 'dd wrote 64 MiB');
    const grown = shmemAndRss(cg.cgroup) - before;
    const daemonGrown = shmemAndRss(daemon, false) - daemonBefore;
    console.log(`[adapter] 64 MiB write: writer cgroup +${(grown / MiB).toFixed(1)} MiB, daemon cgroup +${(daemonGrown / MiB).toFixed(1)} MiB`);
    expect(grown).toBeGreaterThan(64 * MiB * 0.9);
    expect(grown).toBeLessThan(64 * MiB * 1.1 + 4 * MiB);
    expect(daemonGrown).toBeLessThan(8 * MiB);
    expect(mount.inodeStats()[0]!.tier).toBe('memory');

    // Spill it, then promote it through the charged copy: the pages return to the writer's cgroup.
    const ino = mount.inodeStats()[0]!.ino;
    // The size is reached before dd's close(), and RELEASE follows it asynchronously: an open file is not moved (EBUSY).
    await until(() => mount!.inodeStats().find((st) => st.ino === ino)?.openCount === 0, 5000, 'the release of a');
    expect((await mount.moveNow(ino, 'disk')).code).toBe('OK');
    const afterSpill = shmemAndRss(cg.cgroup) - before;
    // Room is plenty: once the anti-thrash window (2 s) has passed, the adapter brings it back.
    await until(() => mount!.inodeStats()[0]!.tier === 'memory', 10000, 'promotion');
    expect(adapter.stats.promotions).toBe(1);
    const afterPromote = shmemAndRss(cg.cgroup) - before;
    const daemonAfter = shmemAndRss(daemon, false) - daemonBefore;
    console.log(`[adapter] after spill writer +${(afterSpill / MiB).toFixed(1)} MiB; after promotion writer +${(afterPromote / MiB).toFixed(1)} MiB, daemon +${(daemonAfter / MiB).toFixed(1)} MiB`);
    expect(afterSpill).toBeLessThan(16 * MiB);
    expect(afterPromote).toBeGreaterThan(64 * MiB * 0.9);
    expect(daemonAfter).toBeLessThan(8 * MiB);
    } finally {
      home.addProcess(process.pid);
      home.close();
      await daemonCg.remove();
    }
  });

  it('accounting in writeback mode (no passthrough): the memory tier is added to the container once, also after a promotion', async () => {
    cg = await createTestCgroup({ limitBytes: 512 * MiB });
    const dir = path.join(base, 'wb');
    const spill = path.join(base, 'wb-spill');
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(spill, { recursive: true, mode: 0o700 });
    mount = await EphemeraMount.open({ mountpoint: dir, spillDir: spill, allowOther: true, mode: 'writeback' });
    expect(mount.mode).toBe('writeback');
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir, sizeHintBytes: 32 * MiB });
    await until(() => adapter.usage().markBytes > 0, 2000, 'adapter started');
    child = spawnInCgroup(cg.cgroup, 'sh', ['-c', `dd if=/dev/zero of=${dir}/a bs=1M count=32 status=none && sleep 30`]);
    await until(() => mount!.tierBytes().memory >= 32 * MiB, 10000, 'dd wrote 32 MiB to the memory tier');
    // The daemon holds the pages: the container's rss+shmem has not got them, usage adds them.
    const counted = () => adapter.usage().usageBytes - shmemAndRss(cg!.cgroup);
    expect(counted()).toBeGreaterThanOrEqual(32 * MiB);
    expect(shmemAndRss(cg.cgroup)).toBeLessThan(16 * MiB);
    const ino = mount.inodeStats()[0]!.ino;
    // RELEASE follows dd's close() asynchronously, and an open file is not moved (EBUSY).
    await until(() => mount!.inodeStats().find((st) => st.ino === ino)?.openCount === 0, 5000, 'the release of a');
    expect((await mount.moveNow(ino, 'disk')).code).toBe('OK');
    // (the adapter's count, not the tier: the tier flips before the adapter's move call returns)
    await until(() => adapter.stats.promotions === 1, 10000, 'promotion');
    expect(mount.inodeStats()[0]!.tier).toBe('memory');
    // Promoted by the daemon (no helper in writeback mode): still on the daemon, counted once.
    expect(shmemAndRss(cg.cgroup)).toBeLessThan(16 * MiB);
    expect(counted()).toBeGreaterThanOrEqual(32 * MiB);
    expect(counted()).toBeLessThan(40 * MiB);
    expect(adapter.stats.promotions).toBe(1);
  });

  it('accounting: a copy_file_range inside the mount lands on the caller, not the daemon', async () => {
    cg = await createTestCgroup({ limitBytes: 512 * MiB });
    mount = await open('cfr');
    const home = MemoryCgroup.fromPid('self');
    const daemonCg = await createTestCgroup();
    daemonCg.cgroup.addProcess(process.pid);
    try {
      const before = shmemAndRss(cg.cgroup);
      const daemonBefore = shmemAndRss(daemonCg.cgroup, false);
      const py = [
        'import os',
        `s = os.open('${mount.mountpoint}/src', os.O_RDWR | os.O_CREAT, 0o644); os.write(s, b'x' * (64 << 20))`,
        `d = os.open('${mount.mountpoint}/dst', os.O_WRONLY | os.O_CREAT, 0o644)`,
        'n = 0',
        'while n < (64 << 20): n += os.copy_file_range(s, d, (64 << 20) - n, 0, n)',
        'print(n)',
      ].join('\n');
      child = spawnInCgroup(cg.cgroup, 'python3', ['-c', py]);
      expect(await child.exited).toBe(0);
      expect(child.stdoutText().trim()).toBe(String(64 * MiB));
      const grown = shmemAndRss(cg.cgroup) - before;
      const daemonGrown = shmemAndRss(daemonCg.cgroup, false) - daemonBefore;
      console.log(`[adapter] 64 MiB + its copy_file_range copy: writer cgroup +${(grown / MiB).toFixed(1)} MiB, daemon cgroup +${(daemonGrown / MiB).toFixed(1)} MiB`);
      expect(grown).toBeGreaterThan(128 * MiB * 0.9);
      expect(daemonGrown).toBeLessThan(8 * MiB);
    } finally {
      home.addProcess(process.pid);
      home.close();
      await daemonCg.remove();
    }
  });

  it('accounting: an allocating fallocate on the memory tier lands on the caller, not the daemon', async () => {
    cg = await createTestCgroup({ limitBytes: 512 * MiB });
    mount = await open('falloc');
    // The profile's hint (64 MiB): a memory-tier file reopened for writing stays in memory only
    // where the hint says it fits (without one it would go to disk at OPEN, as a new file does).
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir, sizeHintBytes: 64 * MiB });
    const home = MemoryCgroup.fromPid('self');
    const daemonCg = await createTestCgroup();
    daemonCg.cgroup.addProcess(process.pid);
    try {
      // A small file, closed: the adapter promotes it to the memory tier.
      child = spawnInCgroup(cg.cgroup, 'python3', ['-c', `open('${mount.mountpoint}/f', 'wb').write(b'x' * 4096)`]);
      expect(await child.exited).toBe(0);
      await until(() => mount!.inodeStats()[0]?.tier === 'memory', 10000, 'promotion of the small file');
      const before = shmemAndRss(cg.cgroup);
      const daemonBefore = shmemAndRss(daemonCg.cgroup, false);
      const grow = (name: string) =>
        ['import os', `fd = os.open('${mount!.mountpoint}/${name}', os.O_RDWR)`, 'os.posix_fallocate(fd, 0, 64 << 20)', 'print(os.fstat(fd).st_blocks * 512)'].join('\n');
      child = spawnInCgroup(cg.cgroup, 'python3', ['-c', grow('f')]);
      expect(await child.exited).toBe(0);
      expect(Number(child.stdoutText().trim())).toBeGreaterThanOrEqual(64 * MiB);
      expect(mount.inodeStats()[0]!.tier).toBe('memory');
      const grown = shmemAndRss(cg.cgroup) - before;
      const daemonGrown = shmemAndRss(daemonCg.cgroup, false) - daemonBefore;
      console.log(`[adapter] 64 MiB posix_fallocate on the memory tier: caller cgroup +${(grown / MiB).toFixed(1)} MiB, daemon cgroup +${(daemonGrown / MiB).toFixed(1)} MiB`);
      expect(grown).toBeGreaterThan(64 * MiB * 0.9);
      expect(daemonGrown).toBeLessThan(8 * MiB);
      expect(mount.counters().unchargedFallocates).toBe(0);

      // Past the container's room an open file's pages could not be spilled: ENOSPC, as a full
      // tmpfs answers, instead of an OOM kill.
      child = spawnInCgroup(cg.cgroup, 'python3', [
        '-c',
        ['import os', `fd = os.open('${mount.mountpoint}/f', os.O_RDWR)`, 'try:', '  os.posix_fallocate(fd, 0, 1 << 30); print("allocated")', 'except OSError as e:', '  print(e.errno)'].join('\n'),
      ]);
      expect(await child.exited).toBe(0);
      expect(child.stdoutText().trim()).toBe('28'); // ENOSPC
      expect(cg.cgroup.oomState().oomKills).toBe(0);

      // Without a helper the daemon still serves the call (the function must not fail), and counts it.
      mount.setChargeAgent({ helper: path.join(base, 'no-such-helper'), cgroupDir: cg.dir });
      child = spawnInCgroup(cg.cgroup, 'python3', ['-c', `open('${mount.mountpoint}/g', 'wb').write(b'x')`]);
      expect(await child.exited).toBe(0);
      await until(() => mount!.inodeStats().filter((s) => s.tier === 'memory').length === 2, 10000, 'promotion of g');
      child = spawnInCgroup(cg.cgroup, 'python3', ['-c', grow('g')]);
      expect(await child.exited).toBe(0);
      expect(mount.counters().unchargedFallocates).toBe(1);
      await adapter.close();
    } finally {
      home.addProcess(process.pid);
      home.close();
      await daemonCg.remove();
    }
  });

  it('shrink 256 → 96 MiB with closed files in memory: spilled, reported ready, and the limit lowers', async () => {
    cg = await createTestCgroup({ limitBytes: 256 * MiB });
    mount = await open('shrink');
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir, sizeHintBytes: 64 * MiB });
    await new Promise((r) => setTimeout(r, 100));
    child = spawnInCgroup(cg.cgroup, 'sh', ['-c', `for i in 1 2 3; do dd if=/dev/zero of=${mount.mountpoint}/f$i bs=1M count=50 status=none; done; sleep 30`]);
    await until(() => mount!.tierBytes().memory >= 150 * MiB, 10000, '150 MiB in the memory tier');
    const t0 = performance.now();
    const result = await adapter.requestShrink(96 * MiB);
    cg.cgroup.setLimit(96 * MiB); // the manager's step; v1 refuses it if usage is still above
    const elapsed = performance.now() - t0;
    console.log(`[adapter] shrink 256→96 MiB: spilled ${(result.spilledBytes / MiB).toFixed(0)} MiB, ready=${result.ready}, evict+lower ${elapsed.toFixed(0)} ms`);
    expect(result.ready).toBe(true);
    expect(cg.cgroup.limit()).toBe(96 * MiB);
    // A bound against a stuck shrink, not a latency claim (that is the mix benchmark's job): idle
    // this takes ~100 ms; a loaded CI machine once took 237 ms.
    expect(elapsed).toBeLessThan(2000);
    expect(cg.cgroup.oomState().oomKills).toBe(0);
  });

  it('emergency: an allocation past the limit with the OOM killer paused resumes after a loan', async () => {
    const allocator = buildAllocator();
    onTestFinished(() => fs.rmSync(allocator.dir, { recursive: true, force: true }));
    cg = await createTestCgroup({ limitBytes: 64 * MiB });
    mount = await open('oom');
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir, oomPause: true });
    let alarmAt = 0;
    adapter.on('alarm', (a) => {
      if (!a.oomPaused) return;
      alarmAt = performance.now();
      cg!.cgroup.setLimit(160 * MiB); // the manager's emergency loan
      a.resolve();
    });
    child = spawnInCgroup(cg.cgroup, allocator.binary, [String(96)]);
    const code = await child.exited;
    expect(alarmAt).toBeGreaterThan(0);
    expect(code).toBe(0);
    expect(cg.cgroup.oomState().oomKills).toBe(0);
  });

  it('emergency with no answer: the watchdog unpauses within ~1 s and the kernel acts; nothing hangs', async () => {
    const allocator = buildAllocator();
    onTestFinished(() => fs.rmSync(allocator.dir, { recursive: true, force: true }));
    cg = await createTestCgroup({ limitBytes: 64 * MiB });
    mount = await open('oom-unanswered');
    const adapter = await mount.attachCgroupBudget({ cgroupPath: cg.dir, oomPause: true, answerTimeoutMs: 900 });
    let alarms = 0;
    adapter.on('alarm', (a) => a.oomPaused && alarms++);
    const t0 = performance.now();
    child = spawnInCgroup(cg.cgroup, allocator.binary, [String(96)]);
    const code = await child.exited;
    const elapsed = performance.now() - t0;
    console.log(`[adapter] unanswered alarm: process ended (${code}) after ${elapsed.toFixed(0)} ms`);
    expect(alarms).toBeGreaterThanOrEqual(1);
    expect(code).not.toBe(0);
    expect(cg.cgroup.oomState().oomKills).toBeGreaterThanOrEqual(1);
    expect(elapsed).toBeLessThan(5000);
  });
});
