// The single-container way, documented in README and tested once: the function's own container
// gets /dev/fuse and CAP_SYS_ADMIN and runs `ephemera mount /tmp` itself, its disk tier on a
// volume (a passthrough backing file on the container's overlay root would be refused).
import * as path from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FUNCTION_RECIPE } from '../../engine/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { REPO, mountUnavailableReason } from '../support/mount';

const docker = await ensureDocker();
const labels = testRunLabels('selfhosted');
const why = docker.skipReason ?? mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING single-container Ephemera test: ${why}\n`);

const SCRIPT = `
set -e
node /opt/ephemera/bin/ephemera.js mount /tmp --allow-other --spill-dir /var/spill --json > /run/mount.log 2>&1 &
for i in $(seq 100); do grep -q ready /run/mount.log && break; sleep 0.1; done
head -1 /run/mount.log; grep -q ready /run/mount.log || { cat /run/mount.log; exit 3; }
grep ' /tmp ' /proc/mounts
su fn -s /bin/sh -c 'dd if=/dev/zero of=/tmp/x bs=1M count=32 status=none && stat -c %s /tmp/x'
`;

describe.skipIf(why !== undefined)('single container: --device /dev/fuse --cap-add SYS_ADMIN, ephemera mount /tmp inside', () => {
  const client = new Docker();
  let image: string;
  const volume = `ephemera-spill-${process.pid}`;

  beforeAll(async () => {
    image = (await docker.engine!.ensureImage(FUNCTION_RECIPE)).tag;
    await client.createVolume({ Name: volume, Labels: labels });
  }, 240_000);
  afterAll(async () => {
    await docker.engine?.removeManaged(labels);
    await client.getVolume(volume).remove({ force: true }).catch(() => undefined);
  });

  it('mounts in passthrough mode and a non-root user writes through it', async () => {
    const container = await client.createContainer({
      Image: image,
      Cmd: ['sh', '-c', SCRIPT],
      Tty: true, // raw logs, no stream-multiplex headers
      Labels: { ...labels, 'ephemera.managed': '1' },
      HostConfig: {
        Devices: [{ PathOnHost: '/dev/fuse', PathInContainer: '/dev/fuse', CgroupPermissions: 'rwm' }],
        CapAdd: ['SYS_ADMIN'],
        Memory: 256 * 1024 * 1024,
        MemorySwap: 256 * 1024 * 1024,
        Binds: [`${REPO}:/opt/ephemera:ro`, `${process.execPath}:/usr/local/bin/node:ro`, `${volume}:/var/spill`],
        NetworkMode: 'none',
      },
    });
    try {
      await container.start();
      const result = await container.wait();
      const logs = (await container.logs({ stdout: true, stderr: true })).toString('utf8').replace(/\r/g, '');
      console.log(`[single container] ${logs.trim().split('\n').join('\n[single container] ')}`);
      expect(result.StatusCode, logs).toBe(0);
      expect(logs).toMatch(/"event":"ready".*"mode":"passthrough"/);
      expect(logs).toMatch(/ \/tmp fuse(\.ephemera)? /);
      expect(logs).toMatch(/^33554432$/m);
    } finally {
      await container.remove({ force: true });
    }
  }, 120_000);
});
