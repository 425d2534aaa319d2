// cgroup v2 against fixture files (this machine binds the memory controller to v1): resolution,
// counters, the watcher and the OomGuard's memory.high hold. The fixture tree is copied to a temp dir
// so writes (memory.high, and the "kernel" updating counters) stay there.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withTimeout } from './fixtures/wait';
import { CgroupWatcher, MemoryCgroup, OomGuard, findCgroupMounts, isMemoryCgroupError } from '../../fusefs/memory';

const MiB = 1024 * 1024;
const FIXTURE = path.resolve(__dirname, '..', 'fixtures', 'cgroup-v2');

let root: string;
let procRoot: string;
let fnDir: string;
const cleanups: Array<() => void> = [];

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-cgroup-v2-'));
  fs.cpSync(FIXTURE, root, { recursive: true });
  const mountinfo = path.join(root, 'proc', 'self', 'mountinfo');
  fs.writeFileSync(mountinfo, fs.readFileSync(mountinfo, 'utf8').replaceAll('@ROOT@', root));
  procRoot = path.join(root, 'proc');
  fnDir = path.join(root, 'sys', 'fs', 'cgroup', 'system.slice', 'fn-1');
});

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  fs.rmSync(root, { recursive: true, force: true });
});

function openFn(): MemoryCgroup {
  const cgroup = MemoryCgroup.fromPid(4242, { procRoot });
  cleanups.push(() => cgroup.close());
  return cgroup;
}

function setEvents(values: Record<string, number>): void {
  const text = ['low', 'high', 'max', 'oom', 'oom_kill', 'oom_group_kill'].map((name) => `${name} ${values[name] ?? 0}`).join('\n');
  fs.writeFileSync(path.join(fnDir, 'memory.events'), `${text}\n`);
}

describe('MemoryCgroup on cgroup v2 (fixtures)', () => {
  it('resolves a pid through /proc/<pid>/cgroup and the cgroup2 mount that has the memory controller', () => {
    expect(findCgroupMounts(procRoot)).toEqual({ v2: path.join(root, 'sys', 'fs', 'cgroup') });
    const cgroup = openFn();
    expect(cgroup.version).toBe(2);
    expect(cgroup.dir).toBe(fnDir);
    expect(cgroup.pids()).toEqual([4242]);
  });

  it('reads limit, usage as anon + shmem (not memory.current, not file), and the OOM counters', () => {
    const cgroup = openFn();
    expect(cgroup.limit()).toBe(128 * MiB);
    expect(cgroup.usage()).toEqual({ rssBytes: 40 * MiB, shmemBytes: 24 * MiB, bytes: 64 * MiB });
    expect(cgroup.oomState()).toEqual({ paused: false, underOom: false, oomKills: 0, throttleEvents: 0 });
    expect(cgroup.events().get('max')).toBe(3);
    fs.writeFileSync(path.join(fnDir, 'memory.max'), 'max\n');
    expect(cgroup.limit()).toBe(Infinity);
    cgroup.setHigh(100 * MiB);
    expect(fs.readFileSync(path.join(fnDir, 'memory.high'), 'utf8')).toBe(String(100 * MiB));
    expect(cgroup.high()).toBe(100 * MiB);
    cgroup.setHigh(Infinity);
    expect(cgroup.high()).toBe(Infinity);
  });

  it('refuses what v2 does not have, with stable codes', () => {
    const cgroup = openFn();
    expect(() => cgroup.setOomKillerPaused(true)).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
    expect(() => cgroup.usage({ hierarchical: false })).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
    expect(() => MemoryCgroup.fromPath(path.join(root, 'nope'))).toThrow(expect.objectContaining({ code: 'E_NO_CGROUP' }));
    expect(() => MemoryCgroup.fromPid(9999, { procRoot })).toThrow(expect.objectContaining({ code: 'E_NO_CGROUP' }));
    fs.writeFileSync(path.join(fnDir, 'memory.stat'), 'anon 1\nshmem twelve\n');
    let caught: unknown;
    try {
      cgroup.usage();
    } catch (err) {
      caught = err;
    }
    expect(isMemoryCgroupError(caught, 'E_CGROUP_IO')).toBe(true);
  });

  it('the watcher sees memory.max changes, mark crossings and oom kills', async () => {
    const cgroup = openFn();
    const watcher = new CgroupWatcher();
    cleanups.push(() => watcher.close());
    const watch = watcher.watch(cgroup, { mark: 'auto' });
    expect(watch.snapshot()).toMatchObject({ limitBytes: 128 * MiB, markBytes: 120 * MiB, overMark: false });

    const limit = new Promise((resolve) => watcher.once('limit', resolve));
    fs.writeFileSync(path.join(fnDir, 'memory.max'), String(64 * MiB));
    // 64 MiB limit → mark 56 MiB; usage 64 MiB is now over it.
    const over = new Promise((resolve) => watcher.once('over-mark', resolve));
    await expect(withTimeout(limit, 1_000, 'limit')).resolves.toMatchObject({ previousBytes: 128 * MiB, limitBytes: 64 * MiB, markBytes: 56 * MiB });
    await expect(withTimeout(over, 1_000, 'over-mark')).resolves.toMatchObject({ usage: { bytes: 64 * MiB }, markBytes: 56 * MiB });

    const kill = new Promise((resolve) => watcher.once('oom-kill', resolve));
    setEvents({ max: 5, oom: 1, oom_kill: 1 });
    await expect(withTimeout(kill, 1_000, 'oom-kill')).resolves.toMatchObject({ oomKills: 1, newKills: 1 });
  });

  it('OomGuard holds with memory.high at the mark, alarms on throttling, and the watchdog releases', async () => {
    const cgroup = openFn();
    const watcher = new CgroupWatcher();
    const guard = new OomGuard(cgroup, { watcher, answerTimeoutMs: 200 });
    cleanups.push(() => guard.close(), () => watcher.close());
    guard.arm();
    expect(cgroup.high()).toBe(120 * MiB);

    const alarm = new Promise<number>((resolve) => guard.once('alarm', () => resolve(performance.now())));
    const released = new Promise<number>((resolve) => guard.once('watchdog', ({ releasedAfterMs }) => resolve(releasedAfterMs)));
    setEvents({ high: 1, max: 3 });
    await withTimeout(alarm, 1_000, 'alarm');
    expect(await withTimeout(released, 1_000, 'watchdog')).toBeLessThan(400);
    expect(cgroup.high()).toBe(Infinity);
    guard.disarm();
    expect(cgroup.high()).toBe(Infinity);
  });

  it('OomGuard: an answered alarm keeps the hold and a loan moves memory.high with the limit', async () => {
    const cgroup = openFn();
    const watcher = new CgroupWatcher();
    const guard = new OomGuard(cgroup, { watcher, answerTimeoutMs: 100 });
    cleanups.push(() => guard.close(), () => watcher.close());
    guard.arm();
    let watchdog = false;
    guard.on('watchdog', () => {
      watchdog = true;
    });
    const moved = new Promise((resolve) => watcher.once('limit', resolve));
    guard.once('alarm', (alarm) => {
      fs.writeFileSync(path.join(fnDir, 'memory.max'), String(256 * MiB));
      alarm.resolve();
    });
    setEvents({ high: 1 });
    await withTimeout(moved, 1_000, 'limit');
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(watchdog).toBe(false);
    // 256 MiB − max(8 MiB, 12.8 MiB) = 243.2 MiB, rounded to whole bytes.
    expect(cgroup.high()).toBe(256 * MiB - Math.ceil(256 * MiB * 0.05));
    guard.disarm();
    expect(cgroup.high()).toBe(Infinity);
  });
});
