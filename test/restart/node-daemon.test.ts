// Issue 14 for the node daemon: `ephemera node-daemon --restartable` is SIGKILLed while a process in
// a container's memory cgroup loops on its mount, and the same command run again takes the mount
// over from its holder: the loop sees no error, a 60 MiB memory-tier file keeps its bytes, its tier
// and its charge to the container, and the record's cgroup and quotas come back.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cgroupDirsFor, restartPaths } from '../../fusefs/restart';
import { heldStateDir } from '../../fusefs/daemon/paths';
import { InMemoryLimitWriter, TenantManager } from '../../manager/index';
import { cgroupV1Unavailable, createTestCgroup, killAndWait, spawnInCgroup, type HeldProcess, type TestCgroup } from '../support/cgroups';
import { REPO, skipLoudly } from '../support/mount';
import { cleanupStateDir, makeStateDir, MiB, startDaemon, type TestDaemon } from '../daemon/support';
import { until } from '../support/wait';
import { alive } from '../support/processes';

const noCgroup = cgroupV1Unavailable();
if (noCgroup) console.warn(`SKIPPED node-daemon takeover: ${noCgroup}`);
const skip = skipLoudly('node-daemon takeover (issue 14)') || noCgroup !== undefined || !fs.existsSync(path.join(REPO, 'fuse-store', 'build', 'ephemera-holder'));
const CONTAINER = 'c0ffee00f00d'; // a Docker-style id (the manager link is by container)
const LOOP = path.join(REPO, 'test', 'restart', 'loop-worker.js');

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** rss + shmem of a v1 memory cgroup: what the container is charged for that cannot be dropped. */
function charged(cg: TestCgroup): number {
  const stat = fs.readFileSync(path.join(cg.dir, 'memory.stat'), 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(stat)?.[1] ?? 0);
  return get('rss') + get('shmem');
}

/** Per-opcode requests this daemon served for `id`, from its /metrics text. */
function served(metrics: string, id: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(/^ephemera_mount_requests_total\{([^}]*)\} (\d+)$/gm)) {
    const labels = m[1]!;
    if (!labels.includes(`mount="${id}"`)) continue;
    const op = /opcode="([A-Z_]+)"/.exec(labels)?.[1];
    if (op) out[op] = Number(m[2]);
  }
  return out;
}

describe.skipIf(skip)('a restartable node daemon is taken over with its mounts', () => {
  let stateDir: string | undefined;
  let daemon: TestDaemon | undefined;
  let cg: TestCgroup | undefined;
  let manager: TenantManager | undefined;
  const children: HeldProcess[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) await killAndWait(c);
    await manager?.close();
    manager = undefined;
    if (daemon) await daemon.stop();
    daemon = undefined;
    if (stateDir) cleanupStateDir(stateDir); // also kills a holder left waiting
    stateDir = undefined;
    await cg?.remove();
    cg = undefined;
  });

  for (const how of ['SIGKILL', 'SIGUSR1'] as const)
  it(`${how === 'SIGKILL' ? 'SIGKILL' : 'an upgrade (SIGUSR1: hand over)'} mid-loop, same command again: 0 errors, a 60 MiB memory-tier file keeps bytes, tier and charge; cgroup, quotas and the manager link come back`, async () => {
    stateDir = makeStateDir();
    const args = ['--restartable', '--holder-timeout', '20'];
    daemon = await startDaemon(stateDir, args);
    let client = await daemon.client();
    const sizeQuota = 256 * MiB;
    const { mount } = await client.addMount({ id: 'fn1', budget: 0, sizeQuota, inodeQuota: 50_000, owner: 'acme' });
    cg = await createTestCgroup({ limitBytes: 512 * MiB });
    // The tenant's manager (its limits in memory: no Docker here) and the container it manages.
    const limits = new InMemoryLimitWriter();
    limits.limits.set(CONTAINER, 512 * MiB);
    manager = await TenantManager.open({ tenant: 'acme', stateDir, limitWriter: limits });
    await manager.addContainer({ id: CONTAINER, tenant: 'acme', initialLimitBytes: 512 * MiB, profile: null, cgroupPath: cg.dir });
    const linked = () => manager!.status().containers.find((c) => c.id === CONTAINER)?.mountConnected ?? false;
    const attach = await client.call<{ linkedToManager: boolean }>({ type: 'attach-cgroup', id: 'fn1', cgroup: cg.dir, sizeHint: 64 * MiB, containerId: CONTAINER });
    expect(attach.linkedToManager).toBe(true);
    await until(linked, 5000, 'the mount linked to its manager');
    const held = restartPaths(path.join(stateDir, 'fuse', 'fn1'), heldStateDir(path.join(stateDir, 'fuse', 'fn1')));
    expect(fs.existsSync(held.socket)).toBe(true);

    // The function writes 60 MiB in its own cgroup: the memory tier's pages are charged to it.
    const big = path.join(mount.path, 'big');
    const before = charged(cg);
    const dd = spawnInCgroup(cg.cgroup, 'dd', ['if=/dev/urandom', `of=${big}`, 'bs=1M', 'count=60', 'status=none']);
    children.push(dd);
    expect(await dd.exited).toBe(0);
    const inodeOf = async () => (await client.stats('fn1', true)).inodeTable!.find((i) => i.size === 60 * MiB);
    for (let i = 0; i < 250 && (await inodeOf())?.openCount !== 0; i++) await new Promise((r) => setTimeout(r, 20));
    const bigInode = await inodeOf();
    expect(bigInode?.tier).toBe('memory');
    const sum = sha256(big);
    const chargedBefore = charged(cg) - before;
    expect(chargedBefore).toBeGreaterThan(58 * MiB);

    // The caller loops (every iteration needs the daemon) through the kill and the takeover.
    const stop = path.join(path.dirname(stateDir), 'loop.stop');
    const out = path.join(path.dirname(stateDir), 'loop.json');
    const loop = spawnInCgroup(cg.cgroup, process.execPath, [LOOP, mount.path, stop, out]);
    children.push(loop);
    await until(() => fs.readdirSync(mount.path).some((n) => /^[fg]\d+$/.test(n)) || fs.existsSync(out), 10_000, 'the loop started');
    await new Promise((r) => setTimeout(r, 700));
    const opsBefore = served(await client.metrics(), 'fn1');
    client.close();

    const oldPid = daemon.pid;
    const killedAt = Date.now();
    if (how === 'SIGKILL') {
      await daemon.kill9();
    } else {
      // Stopped cleanly for the next build: the mount handed over, not unmounted, exit 0.
      const r = await daemon.handOver();
      expect(r.code).toBe(0);
      expect(r.event).toMatchObject({ handedOver: ['fn1'], unmounted: [] });
    }
    expect(alive(oldPid)).toBe(false);
    await until(() => !linked(), 5000, 'the manager saw the link drop');
    await new Promise((r) => setTimeout(r, 300)); // callers wait in the kernel meanwhile
    daemon = await startDaemon(stateDir, args);
    const readyMs = Date.now() - killedAt;
    expect(daemon.ready.resumed).toEqual(['fn1']);
    expect(daemon.ready.remounted).toEqual([]);
    client = await daemon.client();
    await new Promise((r) => setTimeout(r, 1000));
    fs.writeFileSync(stop, '');
    expect(await loop.exited).toBe(0);
    const result = JSON.parse(fs.readFileSync(out, 'utf8')) as { iterations: number; errors: string[]; maxStallMs: number };
    const opsAfter = served(await client.metrics(), 'fn1');
    const stats = await client.stats('fn1', true);
    console.log(
      `[node-daemon takeover, ${how}] ${result.iterations} iterations, ${result.errors.length} errors, longest stall ${result.maxStallMs} ms; ` +
        `kill → ready ${readyMs} ms; served before ${JSON.stringify(opsBefore)}; after ${JSON.stringify(opsAfter)}; ` +
        `60 MiB file charged ${(chargedBefore / MiB).toFixed(1)} MiB before, ${((charged(cg) - before) / MiB).toFixed(1)} MiB after`,
    );
    expect(result.errors).toEqual([]);
    for (const op of ['CREATE', 'OPEN', 'RENAME', 'UNLINK']) {
      expect(opsBefore[op] ?? 0, `${op} before`).toBeGreaterThan(0);
      expect(opsAfter[op] ?? 0, `${op} after`).toBeGreaterThan(0);
    }
    // The file: same bytes, same inode, still in memory and still charged to the container.
    expect(sha256(big)).toBe(sum);
    const after = stats.inodeTable!.find((i) => i.ino === bigInode!.ino);
    expect(after?.tier).toBe('memory');
    expect(charged(cg) - before).toBeGreaterThan(58 * MiB);
    // The record's cgroup and quotas, and the tiers' file systems of the quota's size.
    expect(stats.cgroup).toBe(cg.dir);
    expect(stats.sizeQuota).toBe(sizeQuota);
    expect(stats.inodeQuota).toBe(50_000);
    expect(stats.diskTierBounded).toBe(true);
    await until(linked, 5000, 'the taken-over mount linked to its manager again');
    expect(fs.statfsSync(mount.path).blocks * fs.statfsSync(mount.path).bsize).toBe(sizeQuota);

    // A clean remove-mount after the takeover leaves no holder and no held state.
    const holderPid = Number(fs.readFileSync(held.pidFile, 'utf8'));
    await client.call({ type: 'remove-mount', id: 'fn1' });
    client.close();
    await until(() => !alive(holderPid), 5000, 'the holder exits after remove-mount');
    expect(fs.existsSync(held.dir)).toBe(false);
  });

  for (const placed of [true, false])
  it(
    placed
      ? "a restart that kills the daemon's whole cgroup (systemd's KillMode=control-group, a pod's rollout): with --holder-cgroup the holder is spared and the next daemon takes the mount over, file and all"
      : "the same kill without --holder-cgroup: the holder dies with the daemon's cgroup and the next daemon mounts it empty (what the option is for)",
    async () => {
      stateDir = makeStateDir();
      cg = await createTestCgroup({ limitBytes: 1024 * MiB }); // the service's (or the pod's) cgroup
      const holderCgroup = `ephemera-test-holders-${process.pid}`;
      const args = ['--restartable', '--holder-timeout', '20', ...(placed ? ['--holder-cgroup', holderCgroup] : [])];
      try {
        daemon = await startDaemon(stateDir, args, 240, cg.dir);
        let client = await daemon.client();
        const { mount } = await client.addMount({ id: 'fn1', budget: 0, sizeQuota: 64 * MiB, inodeQuota: 1000, owner: 'acme' });
        const file = path.join(mount.path, 'kept');
        fs.writeFileSync(file, crypto.randomBytes(8 * MiB));
        const sum = sha256(file);
        client.close();
        const held = restartPaths(path.join(stateDir, 'fuse', 'fn1'), heldStateDir(path.join(stateDir, 'fuse', 'fn1')));
        const holderPid = Number(fs.readFileSync(held.pidFile, 'utf8'));
        const memoryCgroupOf = (pid: number) => /^\d+:memory:(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[1];
        if (placed) expect(memoryCgroupOf(holderPid)).toBe(`/${holderCgroup}`);
        else expect(cg.dir.endsWith(memoryCgroupOf(holderPid)!)).toBe(true);

        // The restart: every process in the daemon's cgroup is killed, until none is left.
        const procs = () => fs.readFileSync(path.join(cg!.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
        const killed = procs();
        expect(killed).toContain(daemon.pid);
        for (let i = 0; i < 100 && procs().length > 0; i++) {
          for (const pid of procs()) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              /* gone meanwhile */
            }
          }
          await new Promise((r) => setTimeout(r, 20));
        }
        expect(procs()).toEqual([]);
        await daemon.kill9(); // reaped
        await new Promise((r) => setTimeout(r, 100));
        expect(alive(holderPid)).toBe(placed);

        daemon = await startDaemon(stateDir, args);
        client = await daemon.client();
        if (placed) {
          expect(daemon.ready.resumed).toEqual(['fn1']);
          expect(sha256(file)).toBe(sum);
        } else {
          expect(daemon.ready.remounted).toEqual(['fn1']);
          expect(fs.existsSync(file)).toBe(false);
        }
        console.log(`[node-daemon cgroup kill] holder ${placed ? `in /${holderCgroup}: spared, mount taken over, 8 MiB file intact` : "in the daemon's cgroup: killed with it, mount back empty"} (killed ${killed.length} processes)`);
        await client.call({ type: 'remove-mount', id: 'fn1' });
        client.close();
      } finally {
        if (placed) {
          if (daemon) await daemon.stop();
          daemon = undefined;
          if (stateDir) cleanupStateDir(stateDir);
          stateDir = undefined;
          for (const dir of cgroupDirsFor(holderCgroup)) {
            try {
              fs.rmdirSync(dir);
            } catch {
              /* a holder still in it: cleanupStateDir killed it; a later run's sweep retries */
            }
          }
        }
      }
    },
  );

  it('no daemon within the holder timeout: the holder aborts (callers get ENOTCONN, never a hang), the next daemon mounts it empty and restartable again', async () => {
    stateDir = makeStateDir();
    const args = ['--restartable', '--holder-timeout', '2'];
    daemon = await startDaemon(stateDir, args);
    let client = await daemon.client();
    const { mount } = await client.addMount({ id: 'fn2', budget: 0, sizeQuota: 32 * MiB, inodeQuota: 0, owner: 'acme' });
    fs.writeFileSync(path.join(mount.path, 'kept-only-by-a-successor'), 'x');
    const fusePath = path.join(stateDir, 'fuse', 'fn2');
    const held = restartPaths(fusePath, heldStateDir(fusePath));
    const holderPid = Number(fs.readFileSync(held.pidFile, 'utf8'));
    client.close();
    await daemon.kill9();
    const t0 = Date.now();
    await until(() => !alive(holderPid), 10_000, 'the holder gives up after its timeout');
    const gaveUpMs = Date.now() - t0;
    let code = '';
    try {
      fs.readdirSync(mount.path);
    } catch (e) {
      code = (e as NodeJS.ErrnoException).code ?? '';
    }
    expect(['ENOTCONN', 'ECONNABORTED']).toContain(code);
    expect(fs.readFileSync(held.log, 'utf8')).toMatch(/serving daemon is gone/);

    daemon = await startDaemon(stateDir, args);
    console.log(`[node-daemon takeover] holder gave up ${gaveUpMs} ms after the kill (timeout 2 s); the caller then got ${code}`);
    expect(daemon.ready.resumed).toEqual([]);
    expect(daemon.ready.remounted).toEqual(['fn2']);
    expect(fs.readdirSync(mount.path)).toEqual([]);
    fs.writeFileSync(path.join(mount.path, 'after'), 'y');
    // Restartable again: a second kill is survived.
    await daemon.kill9();
    daemon = await startDaemon(stateDir, args);
    expect(daemon.ready.resumed).toEqual(['fn2']);
    expect(fs.readFileSync(path.join(mount.path, 'after'), 'utf8')).toBe('y');
    client = await daemon.client();
    await client.call({ type: 'remove-mount', id: 'fn2' });
    client.close();
  });
});
