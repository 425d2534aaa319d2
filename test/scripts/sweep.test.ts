import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mountsUnder } from '../daemon/support';
import { REPO, skipLoudly, startMount, teardownAll, type TestMount } from '../support/mount';
import { alive, exitedWithin } from '../support/processes';
import { until } from '../support/wait';

/**
 * scripts/sweep-test-leftovers.sh, which scripts/test.sh runs before the suite: a run killed outright
 * leaves dead FUSE mounts (ENOTCONN), their tiers and loop devices; the next run must not trip on
 * them. Here on a root of its own (the script's argument), so it never touches another test's base.
 */
const skip = skipLoudly('the sweep of a killed run');
const held = (name: string) => (fs.existsSync('/run/ephemera/held') ? fs.readdirSync('/run/ephemera/held').filter((e) => e.startsWith(name)) : []);
const loopsUnder = (dir: string) => spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(`(${dir}/`));
const statError = (p: string) => {
  try {
    fs.statSync(p);
    return 'ok';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
};

describe.skipIf(skip)('scripts/sweep-test-leftovers.sh', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-sweep-roots-'));
  const mounts: TestMount[] = [];
  // Temp bases as the suite makes them (mkdtemp); a fixed name beside them is never swept.
  const killedBase = fs.mkdtempSync(path.join(root, 'ephemera-killed-'));
  const restartBase = fs.mkdtempSync(path.join(root, 'ephemera-killed-restartable-'));
  const liveBase = fs.mkdtempSync(path.join(root, 'ephemera-live-'));
  const fixedBase = path.join(root, 'ephemera-demo');
  const heldName = restartBase.replace(/[^A-Za-z0-9]+/g, '_');
  const pids: number[] = [];
  afterAll(async () => {
    pids.push(...mounts.map((m) => m.pid));
    await teardownAll(mounts);
    // Also when the sweep failed: what the killed daemons left in /run/ephemera and under root.
    const tiers = (fs.existsSync('/run/ephemera') ? fs.readdirSync('/run/ephemera') : []).filter((n) => pids.some((pid) => n === `mem-${pid}` || n.startsWith(`mem-${pid}-`)));
    const left = [...held(heldName).map((n) => `/run/ephemera/held/${n}`), ...tiers.map((n) => `/run/ephemera/${n}`), root];
    for (const dir of left) {
      for (const mp of mountsUnder(dir).sort().reverse()) spawnSync('umount', ['-l', mp], { timeout: 10_000 });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('unmounts and removes the temp base of a killed daemon (sized tiers, loop device, held tier); a live mount beside it keeps its bytes, a fixed directory (ephemera-demo) its files', async () => {
    fs.chmodSync(root, 0o755);
    for (const b of [killedBase, restartBase, liveBase, fixedBase]) fs.mkdirSync(path.join(b, 'mnt'), { recursive: true });
    const fixed = await startMount({ dir: path.join(fixedBase, 'mnt') });
    mounts.push(fixed);
    fs.writeFileSync(path.join(fixedBase, 'report.html'), 'kept');
    const killed = await startMount({ dir: path.join(killedBase, 'mnt'), args: ['--size', '64m', '--spill-dir', path.join(killedBase, 'spill')] });
    mounts.push(killed);
    const restartable = await startMount({ dir: path.join(restartBase, 'mnt'), args: ['--restartable', '--holder-timeout', '1'] });
    mounts.push(restartable);
    const live = await startMount({ dir: path.join(liveBase, 'mnt') });
    mounts.push(live);
    fs.writeFileSync(path.join(killed.dir, 'f'), Buffer.alloc(1 << 20, 1));
    fs.writeFileSync(path.join(restartable.dir, 'f'), Buffer.alloc(1 << 20, 2));
    fs.writeFileSync(path.join(live.dir, 'f'), Buffer.alloc(1 << 20, 3));
    expect(loopsUnder(killedBase).length).toBe(1);
    expect(held(heldName).length).toBeGreaterThan(0);

    // The serving processes themselves (the ready line's pid, not the `timeout` wrapper), SIGKILL.
    for (const m of [killed, restartable, fixed]) process.kill(m.pid, 'SIGKILL');
    for (const m of [killed, restartable, fixed]) expect(await exitedWithin(m.pid, 10_000), `pid ${m.pid} gone`).toBe(true);
    expect(statError(killed.dir)).toBe('ENOTCONN');
    // The holder of the restartable one gives up after --holder-timeout 1 s: then its mount is dead too.
    await until(() => statError(restartable.dir), (e) => e === 'ENOTCONN', 20_000, 'the holder gave up');

    const r = spawnSync('bash', [path.join(REPO, 'scripts', 'sweep-test-leftovers.sh'), root], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`${killedBase} holds the dead FUSE mount`);
    expect(r.stderr).toContain(`${restartBase} holds the dead FUSE mount`);
    expect(r.stderr).not.toContain(liveBase);
    expect(r.stderr).not.toContain(fixedBase);
    expect(fs.readFileSync(path.join(fixedBase, 'report.html'), 'utf8')).toBe('kept');
    for (const b of [killedBase, restartBase]) {
      expect(mountsUnder(b)).toEqual([]);
      expect(fs.existsSync(b)).toBe(false);
    }
    expect(loopsUnder(killedBase)).toEqual([]);
    expect(held(heldName)).toEqual([]);
    // Given a root, it leaves the machine's memory tiers alone (another test's killed daemon may own one).
    expect(r.stderr).not.toContain('is the memory tier of a daemon that is gone');
    // The live run's mount is untouched and serves.
    expect(mountsUnder(liveBase)).toEqual([live.dir]);
    expect(fs.readFileSync(path.join(live.dir, 'f')).equals(Buffer.alloc(1 << 20, 3))).toBe(true);
  }, 120_000);

  it("removes a dead daemon's memory tier (mem-<pid>, a tmpfs) from the run dir and keeps a live one's", async () => {
    const runDir = path.join(root, 'run');
    const exited = spawnSync('true');
    const deadPid = exited.pid!;
    expect(alive(deadPid)).toBe(false);
    const dead = path.join(runDir, `mem-${deadPid}`);
    const liveTier = path.join(runDir, `mem-${process.pid}-_tmp_x`);
    for (const d of [dead, liveTier]) {
      fs.mkdirSync(d, { recursive: true });
      expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'ephemera-mem', d]).status).toBe(0);
    }
    const r = spawnSync('bash', [path.join(REPO, 'scripts', 'sweep-test-leftovers.sh'), path.join(root, 'none')], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, EPHEMERA_RUN_DIR: runDir },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`${dead} is the memory tier of a daemon that is gone`);
    expect(fs.existsSync(dead)).toBe(false);
    expect(mountsUnder(runDir)).toEqual([liveTier]);
  });
});
