import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_RECIPE, Engine, readOomKills, type FunctionContainer, type TmpMode } from '../../engine/index';
import { DockerLimitWriter, managerLabels, TenantManager, type LimitWriter } from '../../manager/index';
import { MountPeer } from '../../fusefs/daemon/index';
import { DEFAULT_POLICY_CONFIG, MiB, planOnStart, scaled, type ContainerProfile } from '../../policy/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { REPO } from '../support/mount';
import { readTenantToken } from '../../link/index';

const docker = await ensureDocker();
const labels = testRunLabels('manager');

const CPU_PROFILE: ContainerProfile = { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 };
const IO_PROFILE: ContainerProfile = { peakMemoryBytes: 2 * MiB, largestFileBytes: 256 * MiB };
/** A CPU-bound loop of $1 iterations in busybox sh (the thesis' factorial, scaled down). */
const CPU_SCRIPT = 'i=0; while [ $i -lt $1 ]; do i=$((i+1)); done; echo done';
/** Prints the limit it runs under, then writes and reads back two $1 MiB files on /tmp. */
const IO_SCRIPT =
  'cat /sys/fs/cgroup/memory/memory.limit_in_bytes; for f in a b; do dd if=/dev/zero of=/tmp/$f bs=1M count=$1 2>/dev/null || exit 3; done; cat /tmp/a /tmp/b >/dev/null; rm -f /tmp/a /tmp/b';

async function cgroupLimit(fc: FunctionContainer): Promise<number> {
  return Number((await readFile(path.join(fc.cgroupPath, 'memory.limit_in_bytes'), 'utf8')).trim());
}

describe.skipIf(docker.skipReason !== undefined)('tenant manager on a real dockerd', () => {
  let engine: Engine;
  let stateDir: string;
  const managers: TenantManager[] = [];

  beforeAll(async () => {
    engine = docker.engine!;
    await engine.ensureImage(BUSYBOX_RECIPE);
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-manager-'));
  }, 240_000);

  // A failed test must not leave its manager holding the tenant's socket for the next one.
  afterEach(async () => {
    for (const m of managers.splice(0)) await m.close().catch(() => undefined);
  });

  afterAll(async () => {
    for (const m of managers) await m.close().catch(() => undefined);
    if (engine) await engine.removeManaged(labels);
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  async function start(tenant: string, fn: string, memoryMiB: number, profile: ContainerProfile, script: string, tmp: TmpMode = { kind: 'overlay' }): Promise<FunctionContainer> {
    return engine.start({
      image: 'busybox',
      command: ['/bin/sh', '-c', script, fn],
      memoryMiB,
      tenant,
      function: fn,
      tmp,
      labels: { ...labels, ...managerLabels(memoryMiB * MiB, profile) },
    });
  }

  async function open(tenant: string, writer: LimitWriter = new DockerLimitWriter(engine.docker)): Promise<TenantManager> {
    const m = await TenantManager.open({ tenant, stateDir, limitWriter: writer, retryReturnsAfterMs: 200 });
    managers.push(m);
    return m;
  }

  async function add(m: TenantManager, fc: FunctionContainer, profile: ContainerProfile): Promise<void> {
    await m.addContainer({ id: fc.id, tenant: fc.spec.tenant, function: fc.spec.function, initialLimitBytes: fc.spec.memoryMiB * MiB, profile, invoker: fc, cgroupPath: fc.cgroupPath });
  }

  it('mix: the IO container borrows the planned amount while both run, returns it after; the other tenant is never touched', async () => {
    const [cpu, io, other] = await Promise.all([
      start('acme', 'cpu', 300, CPU_PROFILE, CPU_SCRIPT),
      start('acme', 'io', 150, IO_PROFILE, IO_SCRIPT),
      start('globex', 'cpu', 200, CPU_PROFILE, CPU_SCRIPT),
    ]);
    const acme = await open('acme');
    const globex = await open('globex');
    await add(acme, cpu, CPU_PROFILE);
    await add(acme, io, IO_PROFILE);
    await add(globex, other, CPU_PROFILE);
    await expect(add(acme, other, CPU_PROFILE)).rejects.toMatchObject({ code: 'E_WRONG_TENANT' });

    const need = Math.ceil((scaled(IO_PROFILE.peakMemoryBytes, DEFAULT_POLICY_CONFIG) + scaled(IO_PROFILE.largestFileBytes, DEFAULT_POLICY_CONFIG) - 150 * MiB) / 4096) * 4096;
    const otherLimits: number[] = [];
    const sampler = setInterval(() => void cgroupLimit(other).then((l) => otherLimits.push(l)), 50);
    try {
      const cpuRun = acme.invoke(cpu.id, ['400000']);
      cpuRun.catch(() => undefined);
      await waitUntil(() => acme.status().containers.find((c) => c.id === cpu.id)!.running, 5000);
      await acme.idle();
      const ioResult = await acme.invoke(io.id, ['128']);
      expect(ioResult.exitCode, ioResult.stderr).toBe(0);
      // The limit the IO function itself saw while running: initial + the planned loan.
      expect(Number(ioResult.stdout.split('\n')[0])).toBe(150 * MiB + need);
      expect(ioResult.oomKills).toBe(0);
      await acme.idle();
      expect(await cgroupLimit(io)).toBe(150 * MiB);
      expect(await cgroupLimit(cpu)).toBe(300 * MiB);
      const cpuResult = await cpuRun;
      expect(cpuResult.stdout.trim()).toBe('done');
      await acme.idle();
      expect(acme.loanTable()).toEqual([]);
      expect([await cgroupLimit(cpu), await cgroupLimit(io)]).toEqual([300 * MiB, 150 * MiB]);
      expect(await readOomKills(io.cgroupPath)).toBe(0);
    } finally {
      clearInterval(sampler);
    }
    expect(otherLimits.length).toBeGreaterThan(5);
    expect(new Set(otherLimits)).toEqual(new Set([200 * MiB]));
    const metrics = await acme.metrics.registry.metrics();
    expect(metrics).toMatch(/ephemera_manager_plans_total\{trigger="start",outcome="ok",tenant="acme"\} [1-9]/);
    await Promise.all([cpu.remove(), io.remove(), other.remove()]);
    await acme.close();
    await globex.close();
  }, 120_000);

  it('a Docker error mid-plan (limit below usage, cgroup v1) rolls back the executed prefix', async () => {
    const tiny: ContainerProfile = { peakMemoryBytes: 1 * MiB, largestFileBytes: 0 };
    const bigFile: ContainerProfile = { peakMemoryBytes: 1 * MiB, largestFileBytes: 350 * MiB };
    const [b, a, c] = await Promise.all([
      start('acme', 'lender-b', 200, tiny, 'sleep 5', { kind: 'tmpfs' }),
      start('acme', 'lender-a', 180, tiny, 'sleep 5', { kind: 'tmpfs' }),
      start('acme', 'borrower', 100, bigFile, 'sleep 1'),
    ]);
    // A really holds 120 MiB of shmem, but its mount's (stale) report says 1 MiB: the plan will ask
    // to lower A below its usage and Docker answers 500.
    const fill = await a.exec(['sh', '-c', 'dd if=/dev/zero of=/tmp/fill bs=1M count=120 2>/dev/null; echo ok']);
    expect(fill.stdout.trim()).toBe('ok');
    const m = await open('acme');
    for (const [fc, p] of [[b, tiny], [a, tiny], [c, bigFile]] as const) await add(m, fc, p);
    const budgets: number[] = [];
    const peer = await MountPeer.connect({ tenant: 'acme', stateDir, reconnect: false });
    await peer.attach(a.id, {
      read: () => ({ memoryBytes: 0, diskBytes: 0, usageBytes: 1 * MiB, limitBytes: 180 * MiB }),
      onBudget: (l) => void budgets.push(l),
      evict: async () => 1 * MiB,
      shrink: async () => 1 * MiB,
    });
    await waitUntil(() => m.status().containers.find((x) => x.id === a.id)!.mountConnected, 2000);
    const runB = m.invoke(b.id).catch((e: unknown) => e);
    const runA = m.invoke(a.id).catch((e: unknown) => e);
    await m.idle();
    const snap = await m.snapshot();
    const plan = planOnStart({ ...snap, containers: snap.containers.map((x) => (x.id === c.id ? { ...x, running: true } : x)) }, c.id, m.policy);
    expect(plan.steps.filter((s) => s.kind === 'lowerLimit').map((s) => s.container)).toEqual([b.id, a.id]);
    const res = await m.invoke(c.id);
    expect(res.exitCode).toBe(0);
    expect(m.counts.rolledBack).toBeGreaterThanOrEqual(1);
    await Promise.all([runA, runB]);
    await m.idle();
    expect(m.loanTable()).toEqual([]);
    for (const [fc, mib] of [[a, 180], [b, 200], [c, 100]] as const) {
      expect(await cgroupLimit(fc)).toBe(mib * MiB);
      expect(m.limitOf(fc.id)).toBe(mib * MiB);
    }
    expect(m.counts.inconsistent).toBe(0);
    await peer.close();
    await m.close();
    await Promise.all([a.remove(), b.remove(), c.remove()]);
  }, 120_000);

  it('safeguard: an alarm over the link takes the lender’s loans back fast and marks it non-harvestable', async () => {
    const [lender, borrower] = await Promise.all([
      start('acme', 'cpu', 300, CPU_PROFILE, 'sleep $1'),
      start('acme', 'io', 150, IO_PROFILE, 'sleep $1'),
    ]);
    const m = await open('acme');
    await add(m, lender, CPU_PROFILE);
    await add(m, borrower, IO_PROFILE);
    const budgets: Array<{ at: number; limit: number }> = [];
    const peer = await MountPeer.connect({ tenant: 'acme', stateDir, reconnect: false });
    await peer.attach(lender.id, {
      read: async () => ({ memoryBytes: 0, diskBytes: 0, usageBytes: 1 * MiB, limitBytes: await cgroupLimit(lender) }),
      onBudget: (limit) => void budgets.push({ at: performance.now(), limit }),
      evict: async () => 1 * MiB,
      shrink: async () => 1 * MiB,
    });
    const runL = m.invoke(lender.id, ['6']).catch((e: unknown) => e);
    await m.idle();
    const runB = m.invoke(borrower.id, ['6']).catch((e: unknown) => e);
    await waitUntil(() => m.loanTable().length === 1, 5000);
    await m.idle();
    const lent = m.loanTable()[0]!.bytes;
    expect(await cgroupLimit(lender)).toBe(300 * MiB - lent);
    const sent = performance.now();
    peer.alarm(lender.id, 32 * MiB, true);
    await waitUntil(() => budgets.some((b) => b.at > sent && b.limit === 300 * MiB), 2000);
    const responseMs = budgets.find((b) => b.at > sent && b.limit === 300 * MiB)!.at - sent;
    console.log(`alarm → lender's limit raised (budget received): ${responseMs.toFixed(1)} ms`);
    // Goal 100 ms (issue 7): the raise is written to the cgroup first, the Docker update follows.
    expect(responseMs).toBeLessThan(100);
    expect(await cgroupLimit(lender)).toBe(300 * MiB);
    await m.idle(); // the borrower's evict → lower steps follow the raise
    expect(await cgroupLimit(borrower)).toBe(150 * MiB);
    expect(m.status().containers.find((c) => c.id === lender.id)!.nonHarvestableUntilMs).not.toBeNull();
    await Promise.all([runL, runB]);
    await m.idle();
    expect(m.loanTable()).toEqual([]);
    await peer.close();
    await m.close();
    await Promise.all([lender.remove(), borrower.remove()]);
  }, 120_000);

  it('safeguard: an OOM-paused alarm from a container that lent nothing gets the paused grant from the largest spare', async () => {
    const [cpu, io] = await Promise.all([start('acme', 'cpu', 300, CPU_PROFILE, 'sleep $1'), start('acme', 'io', 150, IO_PROFILE, 'sleep $1')]);
    const m = await open('acme');
    await add(m, cpu, CPU_PROFILE);
    await add(m, io, IO_PROFILE);
    const budgets: number[] = [];
    const peer = await MountPeer.connect({ tenant: 'acme', stateDir, reconnect: false });
    await peer.attach(io.id, {
      read: async () => ({ memoryBytes: 0, diskBytes: 0, usageBytes: 150 * MiB, limitBytes: await cgroupLimit(io) }),
      onBudget: (limit) => void budgets.push(limit),
      evict: async () => 0,
      shrink: async () => 0,
    });
    // The paused task cannot say how much it needs (shortfall 0): policy grants max(16 MiB, 25 % of 150 MiB).
    const grant = 37.5 * MiB;
    peer.alarm(io.id, 0, true);
    await waitUntil(() => budgets.includes(150 * MiB + grant), 2000);
    await m.idle();
    expect(await cgroupLimit(io)).toBe(150 * MiB + grant);
    expect(await cgroupLimit(cpu)).toBe(300 * MiB - grant);
    expect(m.loanTable()).toEqual([expect.objectContaining({ lender: cpu.id, borrower: io.id, bytes: grant })]);
    expect(m.counts.inconsistent).toBe(0);
    await peer.close();
    await m.close();
    await Promise.all([cpu.remove(), io.remove()]);
  }, 120_000);

  it('a manager killed mid-plan, restarted, brings the limits back to the policy (status over the socket too)', async () => {
    const [cpu, io, other] = await Promise.all([
      start('acme', 'cpu', 300, CPU_PROFILE, 'sleep $1'),
      start('acme', 'io', 150, IO_PROFILE, 'sleep $1'),
      start('globex', 'io', 150, IO_PROFILE, 'sleep $1'),
    ]);
    // Lets the first write through (the lender's lower), then holds the second (the borrower's
    // raise) until the manager is dead: the kernel is left half-way through the plan.
    const real = new DockerLimitWriter(engine.docker);
    let writes = 0;
    let release: ((e: Error) => void) | undefined;
    const held = new Promise<void>((r) => {
      release = () => r();
    });
    const gate: LimitWriter = {
      read: (id) => real.read(id),
      write: async (id, bytes) => {
        writes += 1;
        if (writes >= 2) {
          await held;
          throw new Error('the manager was killed');
        }
        return real.write(id, bytes);
      },
    };
    const m = await open('acme', gate);
    await add(m, cpu, CPU_PROFILE);
    await add(m, io, IO_PROFILE);
    const runCpu = m.invoke(cpu.id, ['3']).catch(() => undefined);
    await m.idle();
    void m.invoke(io.id, ['1']).catch(() => undefined);
    await waitUntil(() => writes >= 2, 5000);
    expect(await cgroupLimit(cpu)).toBeLessThan(300 * MiB);
    expect(await cgroupLimit(io)).toBe(150 * MiB);
    await m.crash();
    release!(new Error('killed'));

    const restarted = await TenantManager.recover(engine.docker, { tenant: 'acme', stateDir, limitWriter: new DockerLimitWriter(engine.docker) });
    managers.push(restarted);
    expect(restarted.containerIds().sort()).toEqual([cpu.id, io.id].sort());
    expect(await cgroupLimit(cpu)).toBe(300 * MiB);
    expect(await cgroupLimit(io)).toBe(150 * MiB);
    expect(await cgroupLimit(other)).toBe(150 * MiB);
    expect(restarted.loanTable()).toEqual([]);
    const { fetchManagerStatus } = await import('../../manager/index');
    const status = await fetchManagerStatus(stateDir, 'acme');
    expect(status.containers.map((c) => [c.id, c.limitBytes, c.pool]).sort()).toEqual(
      [[cpu.id, 300 * MiB, 'harvest'], [io.id, 150 * MiB, 'allocation']].sort(),
    );
    expect(await readTenantToken(stateDir, 'acme')).toMatch(/^[0-9a-f]{64}$/);
    // Prometheus metrics over the same socket, as `ephemera manager metrics` prints them.
    // (async: the manager answering it runs in this process)
    const { stdout: metrics } = await promisify(execFile)(process.execPath, [path.join(REPO, 'bin/ephemera.js'), 'manager', 'metrics', '--tenant', 'acme', '--state-dir', stateDir], { encoding: 'utf8' });
    expect(metrics).toContain(`ephemera_manager_limit_bytes{container="${cpu.id.slice(0, 12)}",tenant="acme"} ${300 * MiB}`);
    expect(metrics).toContain('ephemera_manager_loaned_bytes{tenant="acme"} 0');
    await runCpu;
    await restarted.close();
    await Promise.all([cpu.remove(), io.remove(), other.remove()]);
  }, 120_000);
});

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
