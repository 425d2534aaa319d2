// remove-mount leaves nothing charged to the container that wrote the files: a process in a real
// memory cgroup writes 32 MiB to the memory tier (shmem) and 32 MiB to the disk tier (page cache of
// the tier's ext4 on a loop device), then remove-mount; within 1 s of the reply the cgroup's cache
// and shmem are back at their start. Both ways a mount is kept: the budget keeper, and the memory
// adapter following the cgroup.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { cgroupV1Unavailable, createTestCgroup, removeAllTestCgroups, spawnInCgroup, type TestCgroup } from '../support/cgroups';
import { skipLoudly } from '../support/mount';
import { loopDeviceUnavailable, skipping } from '../support/capabilities';
import { cleanupStateDir, makeStateDir, MiB, mountsUnder, startDaemon, type TestDaemon } from './support';

const noCgroup = cgroupV1Unavailable();
if (noCgroup) process.stderr.write(`\n*** SKIPPING remove-mount charge test: ${noCgroup} ***\n\n`);
const noLoop = loopDeviceUnavailable();
if (noLoop) skipping('remove-mount charge test', noLoop);
const skip = skipLoudly('remove-mount charge') || noCgroup !== undefined || noLoop !== undefined;

/** total_cache (which includes shmem in v1) and total_shmem of the cgroup. */
function charge(cg: TestCgroup): { cache: number; shmem: number; sum: number } {
  const s = cg.cgroup.stat();
  const cache = s.get('total_cache') ?? 0;
  const shmem = s.get('total_shmem') ?? 0;
  return { cache, shmem, sum: cache + shmem };
}

async function runIn(cg: TestCgroup, script: string): Promise<void> {
  const child = spawnInCgroup(cg.cgroup, 'sh', ['-c', script]);
  const code = await child.exited;
  if (code !== 0) throw new Error(`'${script}' in the cgroup exited ${code}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('remove-mount: nothing the mount held stays charged to the writer', () => {
  const stateDirs: string[] = [];
  let daemon: TestDaemon | undefined;
  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
    await removeAllTestCgroups();
  });
  afterAll(() => {
    for (const s of stateDirs) cleanupStateDir(s);
  });

  for (const variant of ['budget keeper', 'memory adapter'] as const) {
    it(`${variant}: cache + shmem back to the start within 1 s of remove-mount's reply`, async () => {
      const stateDir = makeStateDir();
      stateDirs.push(stateDir);
      daemon = await startDaemon(stateDir);
      const client = await daemon.client();
      const cg = await createTestCgroup({ limitBytes: 1024 * MiB });
      try {
        // Warm the tools' own pages, so the start is what the cgroup holds without our files.
        await runIn(cg, 'dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null; sync');
        const start = charge(cg);
        const { mount } = await client.addMount({
          id: 'rc',
          budget: 32 * MiB,
          sizeQuota: 256 * MiB,
          inodeQuota: 0,
          owner: 'test',
          ...(variant === 'memory adapter' ? { cgroup: cg.dir } : {}),
        });
        expect(mount.diskTierBounded).toBe(true);
        const m = path.join(mount.path, 'm');
        const d = path.join(mount.path, 'd');
        // `m` first, into memory (under the budget keeper: the budget's room; under the adapter:
        // promoted on close, charged to the cgroup); then `d` (the keeper leaves it on the disk tier).
        await runIn(cg, `dd if=/dev/zero of=${m} bs=1M count=32 2>/dev/null`);
        // Under the adapter `m` is promoted after its close, by a helper in the cgroup: wait for it.
        for (const until = Date.now() + 5000; Date.now() < until && (await client.stats('rc')).bytes.memory < 32 * MiB; ) await sleep(50);
        await runIn(cg, `dd if=/dev/zero of=${d} bs=1M count=32 2>/dev/null`);
        await sleep(300);
        const s = await client.stats('rc');
        const written = charge(cg);
        process.stderr.write(`${variant}: tiers ${JSON.stringify(s.bytes)}, charge start ${JSON.stringify(start)}, after writing ${JSON.stringify(written)}\n`);
        expect(s.bytes.memory).toBeGreaterThanOrEqual(32 * MiB);
        expect(written.sum - start.sum).toBeGreaterThan(48 * MiB);
        await client.removeMount('rc');
        const replied = Date.now();
        let after = charge(cg);
        while (after.sum - start.sum > 4 * MiB && Date.now() - replied < 1000) {
          await sleep(25);
          after = charge(cg);
        }
        const took = Date.now() - replied;
        // And later still, for the report: how long the charge lingers when it does.
        let lingered = after;
        let lingerMs = took;
        while (lingered.sum - start.sum > 4 * MiB && Date.now() - replied < 15_000) {
          await sleep(100);
          lingered = charge(cg);
          lingerMs = Date.now() - replied;
        }
        process.stderr.write(`${variant}: 1 s after remove-mount ${JSON.stringify(after)} (${took} ms), dropped to ${JSON.stringify(lingered)} after ${lingerMs} ms\n`);
        expect(after.sum - start.sum).toBeLessThanOrEqual(4 * MiB);
        // No layer of the mount, and neither tier's file system, is left mounted (nor a loop device).
        const left = mountsUnder(stateDir).filter((mp) => mp.includes('/rc'));
        expect(left).toEqual([]);
        expect(mountsUnder(mount.path)).toEqual([]);
      } finally {
        client.close();
      }
    });
  }
});
