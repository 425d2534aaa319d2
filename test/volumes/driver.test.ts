// The Docker volume driver on a real dockerd: `docker run --mount type=volume,volume-driver=…,dst=/tmp`
// gives a container made by Docker itself (as OpenWhisk's invoker, Nomad or a compose file make
// them) an Ephemera /tmp of its own, charged to its memory cgroup, with no device and no
// capability. The driver runs in this process under a name unique to the run, so it cannot meet
// another driver; the docker CLI is run asynchronously (dockerd calls back into this process).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX_RECIPE, Engine, FUNCTION_RECIPE } from '../../engine/index';
import { NodeDaemon, cleanupNodeDaemon } from '../../fusefs/daemon';
import { DockerLimitWriter, TenantManager } from '../../manager/index';
import { VolumePlugin, ensureVolumeToken } from '../../volumes/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { mountUnavailableReason } from '../support/mount';

const dockerInfo = await ensureDocker();
const why = dockerInfo.skipReason ?? mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING Docker volume driver tests: ${why}\n`);
const MiB = 1 << 20;
const run16 = `${process.pid}-${randomBytes(3).toString('hex')}`;
const DRIVER = `ephemera-t16-${run16}`;
const LABEL = testRunLabels('volumes')['ephemera.test']!;
const TENANT_A = `t16a-${run16}`;
const TENANT_B = `t16b-${run16}`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The docker CLI, asynchronously: a synchronous call would block the driver dockerd is calling. */
function sh(cmd: string, args: string[], timeoutMs = 120_000, cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * MiB, ...(cwd ? { cwd } : {}) }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
const docker = (...args: string[]) => sh('docker', args);

async function until<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function memoryStat(cgroup: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of fs.readFileSync(path.join(cgroup, 'memory.stat'), 'utf8').split('\n')) {
    const [k, v] = line.split(' ');
    if (k && v) m.set(k, Number(v));
  }
  return m;
}
const readNumber = (file: string) => Number(fs.readFileSync(file, 'utf8').trim());
const oomKills = (cgroup: string) => Number(/^oom_kill (\d+)$/m.exec(fs.readFileSync(path.join(cgroup, 'memory.oom_control'), 'utf8'))?.[1] ?? 0);
const mountinfo = () => fs.readFileSync('/proc/self/mountinfo', 'utf8');

const WRITER = `
import os
chunk = b"\\x5a" * (1 << 20)
def write(name, mib):
    with open(os.path.join("/tmp", name), "wb") as f:
        for _ in range(mib):
            f.write(chunk)
def check(name, mib):
    with open(os.path.join("/tmp", name), "rb") as f:
        for _ in range(mib):
            assert f.read(1 << 20) == chunk
write("a", 60); write("b", 60); write("c", 160)
check("a", 60); check("b", 60); check("c", 160)
print("done")
`;

describe.skipIf(why !== undefined)('Docker volume driver: an Ephemera /tmp for containers Docker makes', () => {
  let stateDir: string;
  let daemon: NodeDaemon;
  let plugin: VolumePlugin;
  const managers = new Map<string, Promise<TenantManager>>();
  const images: Record<string, string> = {};
  const mountOpt = (opts: Record<string, string> = {}, src?: string) =>
    ['type=volume', `volume-driver=${DRIVER}`, 'dst=/tmp', ...(src ? [`src=${src}`] : []), ...Object.entries(opts).map(([k, v]) => `volume-opt=${k}=${v}`)].join(',');
  const managerOf = (tenant: string) => {
    let m = managers.get(tenant);
    if (!m) {
      m = TenantManager.open({ tenant, stateDir, limitWriter: new DockerLimitWriter(new Docker()) });
      managers.set(tenant, m);
    }
    return m;
  };
  const volumeOf = (containerId: string) => plugin.driver.list().find((v) => v.container?.id === containerId);
  const bound = (containerId: string) => until(() => volumeOf(containerId), (v) => v !== undefined, 20_000, `container ${containerId.slice(0, 12)} bound`).then((v) => v!);
  const runDetached = async (args: string[]) => {
    const r = await docker('run', '-d', '--label', `ephemera.test=${LABEL}`, ...args);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim();
  };
  /** Nothing of the volume is left: no mount, no directory, no cgroup of its container. */
  const expectNothingLeft = (v: { mountId: string; path: string }, cgroup: string | undefined) => {
    expect(mountinfo()).not.toContain(v.mountId);
    expect(fs.existsSync(v.path)).toBe(false);
    expect(fs.existsSync(path.join(stateDir, 'spill', v.mountId))).toBe(false);
    if (cgroup) expect(fs.existsSync(cgroup)).toBe(false);
  };

  beforeAll(async () => {
    stateDir = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-t16-volumes-'));
    daemon = (await NodeDaemon.start({ stateDir })).daemon;
    plugin = await VolumePlugin.start({ name: DRIVER, daemonSocket: daemon.paths.socket, stateDir, docker: new Docker(), defaultSizeQuota: 512 * MiB, managerOf });
    const engine = await Engine.connect({});
    images.busybox = (await engine.ensureImage(BUSYBOX_RECIPE)).tag;
    images.fn = (await engine.ensureImage(FUNCTION_RECIPE)).tag;
  }, 300_000);

  afterAll(async () => {
    const ids = (await docker('ps', '-aq', '--filter', `label=ephemera.test=${LABEL}`)).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) await docker('rm', '-f', '-v', ...ids);
    const vols = (await docker('volume', 'ls', '-q', '--filter', `driver=${DRIVER}`)).stdout.split('\n').filter(Boolean);
    if (vols.length > 0) await docker('volume', 'rm', '-f', ...vols);
    await plugin?.close();
    for (const m of managers.values()) await (await m.catch(() => undefined))?.close();
    await daemon?.stop();
    if (stateDir) {
      try {
        cleanupNodeDaemon(stateDir);
      } catch {
        /* nothing left */
      }
      fs.rmSync(stateDir, { recursive: true, force: true });
    }
  }, 120_000);

  for (const image of ['busybox', 'fn'] as const) {
    it(`${image} image, uid 1000, no device, no capability: /tmp is fuse.ephemera, 64 MiB written is charged to the container's cgroup, size= is the quota; rm then volume rm leave nothing`, async () => {
      const id = await runDetached(['-u', '1000', '-m', '256m', '--mount', mountOpt({ size: '128m' }), images[image]!, 'sleep', '600']);
      const v = await bound(id);
      const cgroup = v.container!.cgroup;
      const mounts = await docker('exec', id, 'sh', '-c', 'grep " /tmp " /proc/mounts; id -u; df -k /tmp | tail -1');
      expect(mounts.code, mounts.stderr).toBe(0);
      expect(mounts.stdout).toMatch(/^\S+ \/tmp fuse\.ephemera /m);
      expect(mounts.stdout).toMatch(/^1000$/m);
      expect(Number(mounts.stdout.trim().split('\n').at(-1)!.split(/\s+/)[1]) * 1024).toBe(128 * MiB);
      const inspect = JSON.parse((await docker('inspect', id)).stdout)[0];
      expect(inspect.HostConfig.Devices ?? []).toEqual([]);
      expect(inspect.HostConfig.CapAdd ?? []).toEqual([]);
      expect(inspect.HostConfig.Privileged).toBe(false);

      const before = memoryStat(cgroup);
      const w = await docker('exec', id, 'dd', 'if=/dev/zero', 'of=/tmp/a', 'bs=1M', 'count=64');
      expect(w.code, w.stderr).toBe(0);
      // Written on the disk tier (page cache, the writer's), promoted on close by the helper in
      // the container's cgroup: either way the container pays, and once promoted as shmem.
      const stats = await until(() => daemon.handle({ type: 'stats', id: v.mountId }), (r) => r.ok && (r as unknown as { mounts: Array<{ bytes: { memory: number } }> }).mounts[0]!.bytes.memory >= 64 * MiB, 20_000, 'the file promoted to the memory tier');
      const after = memoryStat(cgroup);
      const shmemGrowth = (after.get('shmem')! - before.get('shmem')!) / MiB;
      const usage = readNumber(path.join(cgroup, 'memory.usage_in_bytes')) / MiB;
      console.log(`[volumes] ${image}: 64 MiB in /tmp → container shmem +${shmemGrowth.toFixed(1)} MiB, usage ${usage.toFixed(1)} MiB; tiers ${JSON.stringify((stats as unknown as { mounts: Array<{ bytes: unknown }> }).mounts[0]!.bytes)}`);
      expect(shmemGrowth).toBeGreaterThan(63);
      expect(usage).toBeGreaterThan(64);
      expect(oomKills(cgroup)).toBe(0);

      expect((await docker('rm', '-f', id)).code).toBe(0);
      // The container is gone, the volume is not (a named or anonymous volume outlives `rm`): its
      // store holds the file on the disk tier, nothing in memory charged to a cgroup that is gone.
      await plugin.idle();
      const kept = plugin.driver.list().find((x) => x.name === v.name)!;
      expect(kept.mounted).toBe(false);
      const s = await daemon.handle({ type: 'stats', id: v.mountId });
      const tiers = (s as unknown as { mounts: Array<{ bytes: { memory: number; disk: number }; cgroup: string | null }> }).mounts[0]!;
      expect(tiers.bytes).toEqual({ memory: 0, disk: 64 * MiB });
      expect(tiers.cgroup).toBeNull();
      const rm = await docker('volume', 'rm', v.name);
      expect(rm.code, rm.stderr).toBe(0);
      expect(plugin.driver.list().find((x) => x.name === v.name)).toBeUndefined();
      expectNothingLeft(v, cgroup);
    }, 180_000);
  }

  it('2 × 60 MiB then 160 MiB in a 128 MiB container (function image, uid 1000): exit 0, 0 OOM kills; `docker run --rm` leaves nothing', async () => {
    const id = await runDetached(['-u', '1000', '-m', '128m', '--mount', mountOpt(), images.fn!, 'sleep', '600']);
    const v = await bound(id);
    const cgroup = v.container!.cgroup;
    const r = await sh('docker', ['exec', id, 'python3', '-c', WRITER], 180_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('done');
    expect(oomKills(cgroup)).toBe(0);
    const inspect = JSON.parse((await docker('inspect', id)).stdout)[0];
    expect(inspect.State.OOMKilled).toBe(false);
    expect(inspect.State.Running).toBe(true);
    expect((await docker('rm', '-f', '-v', id)).code).toBe(0);
    await plugin.idle();
    expectNothingLeft(v, cgroup);

    // As a platform runs it: the writer is the container's command, `--rm` removes the anonymous volume.
    const before = new Set(plugin.driver.list().map((x) => x.name));
    const cidfile = path.join(stateDir, 'direct.cid');
    const direct = await sh('docker', ['run', '--rm', '--cidfile', cidfile, '--label', `ephemera.test=${LABEL}`, '-u', '1000', '-m', '128m', '--mount', mountOpt(), images.fn!, 'python3', '-c', WRITER], 180_000);
    expect(direct.code, direct.stderr).toBe(0); // an OOM kill would be 137
    expect(direct.stdout.trim()).toBe('done');
    await plugin.idle();
    expect(plugin.driver.list().filter((x) => !before.has(x.name))).toEqual([]);
    expect(mountinfo()).not.toContain(`${DRIVER}.`);
    const cid = fs.readFileSync(cidfile, 'utf8').trim();
    expect(cid).toMatch(/^[0-9a-f]{64}$/);
    for (const dir of [`docker/${cid}`, `system.slice/docker-${cid}.scope`]) expect(fs.existsSync(path.join('/sys/fs/cgroup/memory', dir))).toBe(false);
  }, 400_000);
});
