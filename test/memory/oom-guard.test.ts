import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CgroupWatcher, OomGuard, type OomAlarm } from '../../fusefs/memory';
import {
  type HeldProcess,
  cgroupV1Unavailable,
  createTestCgroup,
  killAndWait,
  removeAllTestCgroups,
  spawnInCgroup,
} from '../support/cgroups';
import { buildAllocator } from './fixtures/build';
import { waitFor, withTimeout } from './fixtures/wait';

const MiB = 1024 * 1024;
const unavailable = cgroupV1Unavailable();
if (unavailable !== undefined) console.warn(`\n!!! SKIPPING OOM guard cgroup tests: ${unavailable}\n`);

describe.skipIf(unavailable !== undefined)('OomGuard on cgroup v1: hold at the limit, loan or watchdog', () => {
  let allocator: { binary: string; dir: string };
  let watcher: CgroupWatcher;
  let guard: OomGuard | undefined;
  let child: HeldProcess | undefined;

  beforeAll(() => {
    allocator = buildAllocator();
  });
  afterEach(async () => {
    guard?.close();
    guard = undefined;
    watcher?.close();
    await killAndWait(child);
    child = undefined;
    await removeAllTestCgroups();
  });
  afterAll(() => {
    if (allocator !== undefined) fs.rmSync(allocator.dir, { recursive: true, force: true });
  });

  it('(a) a loan answered to the alarm lets a 96 MiB allocation finish in a 64 MiB cgroup', async () => {
    const test = await createTestCgroup({ limitBytes: 64 * MiB });
    watcher = new CgroupWatcher();
    guard = new OomGuard(test.cgroup, { watcher });
    guard.arm();
    expect(test.cgroup.oomState().paused).toBe(true);

    let alarmAt = 0;
    let loanedAt = 0;
    const resumed = new Promise<number>((resolve) => guard!.once('resumed', ({ afterMs }) => resolve(afterMs)));
    guard.once('alarm', (alarm: OomAlarm) => {
      alarmAt = performance.now();
      test.cgroup.setLimit(256 * MiB);
      loanedAt = performance.now();
      alarm.resolve();
    });
    let watchdogFired = false;
    guard.once('watchdog', () => {
      watchdogFired = true;
    });

    child = spawnInCgroup(test.cgroup, allocator.binary, ['96']);
    const exit = await withTimeout(child.exited, 10_000, 'allocator');
    const exitedAt = performance.now();
    const alarmToResumeMs = await withTimeout(resumed, 2_000, 'resumed event');
    console.log(
      `OOM guard loan: alarm → limit raised ${(loanedAt - alarmAt).toFixed(1)} ms, alarm → resumed (under_oom 0 seen) ` +
        `${alarmToResumeMs.toFixed(1)} ms, alarm → allocator exit ${(exitedAt - alarmAt).toFixed(1)} ms`,
    );
    expect(alarmAt).toBeGreaterThan(0);
    expect(exit).toBe(0);
    expect(child.stdoutText()).toContain('done');
    expect(test.cgroup.oomState().oomKills).toBe(0);
    expect(watchdogFired).toBe(false);
    expect(alarmToResumeMs).toBeLessThan(1_000);
  });

  it('(b) with no answer the watchdog releases within 1 s and the kernel OOM-kills', async () => {
    const test = await createTestCgroup({ limitBytes: 64 * MiB });
    watcher = new CgroupWatcher();
    guard = new OomGuard(test.cgroup, { watcher });
    const kills: number[] = [];
    watcher.on('oom-kill', ({ cgroup, oomKills }) => {
      if (cgroup === test.cgroup) kills.push(oomKills);
    });
    guard.arm();
    let alarmAt = 0;
    guard.once('alarm', () => {
      alarmAt = performance.now();
    });
    const released = new Promise<number>((resolve) => guard!.once('watchdog', ({ releasedAfterMs }) => resolve(releasedAfterMs)));

    child = spawnInCgroup(test.cgroup, allocator.binary, ['96']);
    const releasedAfterMs = await withTimeout(released, 5_000, 'watchdog');
    const exit = await withTimeout(child.exited, 5_000, 'allocator');
    const exitedAt = performance.now();
    console.log(
      `OOM guard watchdog: alarm → release ${releasedAfterMs.toFixed(1)} ms, alarm → killed ${(exitedAt - alarmAt).toFixed(1)} ms`,
    );
    expect(releasedAfterMs).toBeLessThanOrEqual(1_000);
    expect(exit).toBe('SIGKILL');
    expect(test.cgroup.oomState().oomKills).toBe(1);
    await waitFor(() => kills.length > 0, 1_000);
    expect(kills).toEqual([1]);
    // After the kill the guard holds again, ready for the next stall.
    await waitFor(() => test.cgroup.oomState().paused, 1_000);
  });

  it('disarm and close release the hold', async () => {
    const test = await createTestCgroup({ limitBytes: 64 * MiB });
    watcher = new CgroupWatcher();
    guard = new OomGuard(test.cgroup, { watcher });
    guard.arm();
    expect(test.cgroup.oomState().paused).toBe(true);
    guard.disarm();
    expect(test.cgroup.oomState().paused).toBe(false);
    expect(() => new OomGuard(test.cgroup, { watcher, answerTimeoutMs: 5_000 })).toThrow(
      expect.objectContaining({ code: 'E_BAD_CONFIG' }),
    );
  });
});
