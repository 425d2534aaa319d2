// The node's parts together, as `ephemera node` runs them: one node daemon serving each
// container's Ephemera /tmp, a tenant manager, and the link between them. The IO container's
// mount reports its store to the manager; a loan flows to it while the CPU container runs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX_RECIPE, Engine, type FunctionContainer } from '../../engine/index';
import { EphemeraTmpProvider } from '../../node/index';
import { NodeDaemon } from '../../fusefs/daemon';
import { DockerLimitWriter, managerLabels, TenantManager } from '../../manager/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { mountUnavailableReason } from '../support/mount';
import { removeNodeDaemonState } from '../support/node-state';
import { until } from '../support/wait';

const dockerInfo = await ensureDocker();
const labels = testRunLabels('node-integration');
const why = dockerInfo.skipReason ?? mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING node integration test: ${why}\n`);
const MiB = 1 << 20;

describe.skipIf(why !== undefined)('node: daemon + tenant manager + Ephemera /tmp containers', () => {
  let stateDir: string;
  let daemon: NodeDaemon;
  let manager: TenantManager;
  let provider: EphemeraTmpProvider;
  let engine: Engine;
  let image: string;
  const containers: FunctionContainer[] = [];

  beforeAll(async () => {
    stateDir = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-node-int-'));
    daemon = (await NodeDaemon.start({ stateDir })).daemon;
    const docker = new Docker();
    manager = await TenantManager.open({ tenant: 'acme', stateDir, limitWriter: new DockerLimitWriter(docker) });
    provider = await EphemeraTmpProvider.start({ socketPath: daemon.paths.socket });
    engine = await Engine.connect({ tmpProvider: provider });
    image = (await engine.ensureImage(BUSYBOX_RECIPE)).tag;
  }, 240_000);

  afterAll(async () => {
    for (const c of containers) await c.remove().catch(() => undefined);
    if (engine) await engine.removeManaged(labels);
    await manager?.close();
    await provider?.close();
    await daemon?.stop();
    if (stateDir) {
      removeNodeDaemonState(stateDir);
    }
  });

  const cpuProfile = { peakMemoryBytes: 4 * MiB, largestFileBytes: 0 };
  const ioProfile = { peakMemoryBytes: 2 * MiB, largestFileBytes: 256 * MiB };
  const start = async (fn: string, limitMiB: number, profile: typeof cpuProfile) => {
    const fc = await engine.start({
        image,
        command: ['/bin/sh', '-c'],
        memoryMiB: limitMiB,
        tmp: { kind: 'bind' },
        tenant: 'acme',
        function: fn,
        labels: { ...labels, ...managerLabels(limitMiB * MiB, profile) },
      });
      containers.push(fc);
      await manager.addContainer({ id: fc.id, tenant: 'acme', function: fn, initialLimitBytes: limitMiB * MiB, profile, invoker: fc, cgroupPath: fc.cgroupPath });
      return fc;
  };

  it('the mount reports to the manager, and the IO container borrows while the CPU container runs', async () => {
    const cpu = await start('cpu', 300, cpuProfile);
    const io = await start('io', 150, ioProfile);

    // The IO container's mount is linked: its store shows up in the manager's view.
    await io.invoke(['dd if=/dev/zero of=/tmp/warm bs=1M count=20 status=none']);
    const seen = await until(
      () => manager.status().containers.find((c) => c.id === io.id)!,
      (c) => c.mountConnected && c.storeMemoryBytes + c.storeDiskBytes >= 20 * MiB,
      10_000,
      "the IO mount's report",
    );
    console.log(`[node] IO mount reported: memory ${(seen.storeMemoryBytes / MiB).toFixed(0)} MiB, disk ${(seen.storeDiskBytes / MiB).toFixed(0)} MiB`);

    // While both run, the IO container (allocation pool) borrows from the CPU one (harvest pool).
    const cpuRun = manager.invoke(cpu.id, ['sleep 4']);
    await new Promise((r) => setTimeout(r, 300));
    const ioRun = manager.invoke(io.id, ['sleep 1; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max']);
    const ioResult = await ioRun;
    const ioLimitInside = Number(ioResult.stdout.trim());
    console.log(`[node] IO limit seen inside while both ran: ${(ioLimitInside / MiB).toFixed(1)} MiB (initial 150 MiB)`);
    expect(ioLimitInside).toBeGreaterThan(150 * MiB + 100 * MiB);
    await cpuRun;
    await manager.idle();
    expect(manager.limitOf(io.id)).toBe(150 * MiB);
    expect(manager.limitOf(cpu.id)).toBe(300 * MiB);
    expect(manager.loanTable()).toEqual([]);
    expect(ioResult.oomKills).toBe(0);
  }, 120_000);

  it('the manager crashes while a loan is open: recovered from Docker labels, the mount rejoins, limits back to the policy, /tmp data intact', async () => {
    const cpu = await start('cpu2', 300, cpuProfile);
    const io = await start('io2', 150, ioProfile);
    const write = await io.invoke(['dd if=/dev/urandom of=/tmp/keep bs=1M count=24 status=none && md5sum /tmp/keep']);
    expect(write.exitCode, write.stderr).toBe(0);
    const sum = write.stdout.split(' ')[0];
    const cpuRun = manager.invoke(cpu.id, ['sleep 3']).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    const ioRun = manager.invoke(io.id, ['sleep 2']).catch(() => undefined);
    await until(() => manager.loanTable().length, (n) => n === 1, 10_000, 'a loan to the IO container');
    expect(await manager.limitOf(io.id)).toBeGreaterThan(150 * MiB);
    await manager.crash(); // the invocations go on in their containers; nobody manages their limits
    await Promise.all([cpuRun, ioRun]);
    const limitIn = async (fc: FunctionContainer) => Number(fs.readFileSync(path.join(fc.cgroupPath!, 'memory.limit_in_bytes'), 'utf8'));
    expect(await limitIn(io)).toBeGreaterThan(150 * MiB); // the dead manager's loan is still in the kernel
    manager = await TenantManager.recover(new Docker(), { tenant: 'acme', stateDir, limitWriter: new DockerLimitWriter(new Docker()), mountGraceMs: 500 });
    await manager.idle();
    expect(manager.status().containers.map((c) => c.id)).toEqual(expect.arrayContaining([cpu.id, io.id])); // rebuilt from labels
    await until(() => limitIn(io), (v) => v === 150 * MiB, 10_000, "the IO container's limit back at 150 MiB");
    expect(await limitIn(cpu)).toBe(300 * MiB);
    expect(manager.loanTable()).toEqual([]);
    await until(() => manager.status().containers.find((c) => c.id === io.id)?.mountConnected ?? false, (v) => v, 10_000, 'the IO mount rejoined the new manager');
    const read = await io.invoke(['md5sum /tmp/keep']);
    expect(read.stdout.split(' ')[0]).toBe(sum);
    expect(manager.counts.inconsistent).toBe(0);
  }, 120_000);
});
