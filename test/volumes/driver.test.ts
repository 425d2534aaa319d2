// The Docker volume driver on a real dockerd: `docker run --mount type=volume,volume-driver=…,dst=/tmp`
// gives a container made by Docker itself (as OpenWhisk's invoker, Nomad or a compose file make
// them) an Ephemera /tmp of its own, charged to its memory cgroup, with no device and no
// capability. The driver runs in this process under a fixed test name (dockerd keeps retrying a
// legacy plugin that any volume in its store still names, so a name per run would leave one dead
// plugin per failed run; with one name a run removes what an earlier one left). The docker CLI is
// run asynchronously (dockerd calls back into this process).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX_RECIPE, Engine, FUNCTION_RECIPE } from '../../engine/index';
import { NodeDaemon } from '../../fusefs/daemon';
import { DockerLimitWriter, TenantManager } from '../../manager/index';
import { VolumePlugin, ensureVolumeToken } from '../../node/volumes/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { mountsUnder } from '../daemon/support';
import { removeNodeDaemonState } from '../support/node-state';
import { mountUnavailableReason } from '../support/mount';
import { until } from '../support/wait';

const dockerInfo = await ensureDocker();
const why = dockerInfo.skipReason ?? mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING Docker volume driver tests: ${why}\n`);
const MiB = 1 << 20;
const run16 = `${process.pid}-${randomBytes(3).toString('hex')}`;
const DRIVER = 'ephemera-test-volumes';
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
    // A listing waits for every volume's driver; compose's 60 s default is short on a loaded machine.
    const env = { ...process.env, COMPOSE_HTTP_TIMEOUT: '300' };
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * MiB, env, ...(cwd ? { cwd } : {}) }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
const docker = (...args: string[]) => sh('docker', args);

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
// Mount assertions look under this run's state dir only (mountsUnder): a run killed outright
// (SIGKILL, a machine restart) cannot unmount, and its mounts carry the same driver name.

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
    expect(mountsUnder(stateDir).filter((mp) => mp.includes(v.mountId))).toEqual([]);
    expect(fs.existsSync(v.path)).toBe(false);
    expect(fs.existsSync(path.join(stateDir, 'spill', v.mountId))).toBe(false);
    if (cgroup) expect(fs.existsSync(cgroup)).toBe(false);
  };

  beforeAll(async () => {
    stateDir = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-t16-volumes-'));
    daemon = (await NodeDaemon.start({ stateDir })).daemon;
    plugin = await VolumePlugin.start({ name: DRIVER, daemonSocket: daemon.paths.socket, stateDir, docker: new Docker(), defaultSizeQuota: 512 * MiB, managerOf });
    // Volumes an earlier, failed run left in dockerd's store under this driver name.
    const stale = (await docker('volume', 'ls', '-q', '--filter', `driver=${DRIVER}`)).stdout.split('\n').filter(Boolean);
    if (stale.length > 0) console.warn(`[volumes] removing ${stale.length} volume(s) an earlier run left: ${(await docker('volume', 'rm', '-f', ...stale)).code}`);
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
      removeNodeDaemonState(stateDir);
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
      // ext4 counts an extent block where the copy landed in more than four extents (the disk
      // tier's free space is shaped by its quota reserve): within a few 1 KiB blocks; the
      // spill also writes its copy back before dropping the daemon's page cache, so they are allocated.
      expect(tiers.bytes.memory).toBe(0);
      expect(tiers.bytes.disk).toBeGreaterThanOrEqual(64 * MiB);
      expect(tiers.bytes.disk).toBeLessThanOrEqual(64 * MiB + 64 * 1024);
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
    expect(mountsUnder(stateDir).filter((mp) => mp.includes(`${DRIVER}.`))).toEqual([]);
    const cid = fs.readFileSync(cidfile, 'utf8').trim();
    expect(cid).toMatch(/^[0-9a-f]{64}$/);
    for (const dir of [`docker/${cid}`, `system.slice/docker-${cid}.scope`]) expect(fs.existsSync(path.join('/sys/fs/cgroup/memory', dir))).toBe(false);
  }, 400_000);
  it("a named volume: a second running container is refused naming the first; restart binds the new cgroup again; the image's /tmp copied in by dockerd ends up charged to the container", async () => {
    // An image whose /tmp holds 8 MiB: dockerd copies it into the empty volume before the
    // container (and its cgroup) exists.
    const maker = `t16-maker-${run16}`;
    const seeded = `ephemera-t16-seeded:${run16}`;
    expect((await docker('run', '--name', maker, '--label', `ephemera.test=${LABEL}`, images.busybox!, 'sh', '-c', 'dd if=/dev/urandom of=/tmp/seed bs=1M count=8 2>/dev/null && chmod 644 /tmp/seed')).code).toBe(0);
    expect((await docker('commit', maker, seeded)).code).toBe(0);
    await docker('rm', '-f', maker);
    const name = `t16-named-${run16}`;
    try {
      const first = await runDetached(['--name', `t16-first-${run16}`, '-u', '1000', '-m', '256m', '--mount', mountOpt({ size: '64m' }, name), seeded, 'sleep', '600']);
      const v = await bound(first);
      const seen = await docker('exec', first, 'sh', '-c', 'ls -l /tmp/seed && md5sum /tmp/seed');
      expect(seen.code, seen.stderr).toBe(0);
      // Copied in on the disk tier (dockerd's writes), then promoted by the helper in the
      // container's cgroup once bound: the container pays for it, not dockerd.
      await until(() => memoryStat(v.container!.cgroup).get('shmem')!, (b) => b >= 8 * MiB, 20_000, "the image's /tmp promoted and charged to the container");

      const second = await docker('run', '-d', '--label', `ephemera.test=${LABEL}`, '--mount', mountOpt({}, name), images.busybox!, 'sleep', '600');
      expect(second.code).not.toBe(0);
      expect(second.stderr).toContain(`is in use by container t16-first-${run16}`);

      const oldCgroup = v.container!.cgroup;
      expect((await docker('restart', '-t', '1', first)).code).toBe(0);
      const again = await until(() => volumeOf(first), (x) => x !== undefined && fs.existsSync(x.container!.cgroup), 20_000, 'bound again after restart');
      expect(again!.container!.cgroup).toBe(oldCgroup); // same path, a new cgroup
      const md5 = await docker('exec', first, 'md5sum', '/tmp/seed');
      expect(md5.stdout.split(' ')[0]).toBe(seen.stdout.trim().split('\n').at(-1)!.split(' ')[0]); // kept across the restart (on disk)
      const w = await docker('exec', '-u', '1000', first, 'dd', 'if=/dev/zero', 'of=/tmp/after', 'bs=1M', 'count=32');
      expect(w.code, w.stderr).toBe(0);
      await until(() => memoryStat(again!.container!.cgroup).get('shmem')!, (b) => b >= 32 * MiB, 20_000, 'a write after the restart charged to the new cgroup');
      expect((await docker('rm', '-f', first)).code).toBe(0);
      await plugin.idle();
      expect((await docker('volume', 'rm', name)).code).toBe(0);
      expectNothingLeft(v, oldCgroup);
    } finally {
      await docker('volume', 'rm', '-f', name);
      await docker('rmi', '-f', seeded);
    }
  }, 180_000);

  it('tenants: a volume claiming another tenant, a wrong token, or a tenant without a token is refused with a clear error and gets no store and no loan', async () => {
    const tokenA = await ensureVolumeToken(stateDir, TENANT_A);
    await ensureVolumeToken(stateDir, TENANT_B);
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ token: tokenA, tenant: TENANT_B }, new RegExp(`E_WRONG_TENANT: the volume claims tenant ${TENANT_B}, but its token is not ${TENANT_B}'s`)],
      [{ token: 'f'.repeat(64) }, /E_TOKEN: volume-opt=token is not a volume token of this node/],
      [{ tenant: TENANT_A }, new RegExp(`E_TOKEN: volume-opt=tenant=${TENANT_A} needs volume-opt=token=`)],
      [{ sise: '64m' }, /E_BAD_OPTION: unknown volume option "sise"/],
    ];
    const volumesBefore = plugin.driver.list().length;
    for (const [opts, message] of cases) {
      const r = await docker('run', '--rm', '--label', `ephemera.test=${LABEL}`, '-m', '300m', '--mount', mountOpt({ mem: '2m', file: '256m', ...opts }), images.busybox!, 'true');
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(message);
    }
    console.log(`[volumes] refused: ${cases.length} volumes, e.g. "${(await docker('run', '--rm', '--mount', mountOpt({ token: tokenA, tenant: TENANT_B }), images.busybox!, 'true')).stderr.trim()}"`);
    expect(plugin.driver.list().length).toBe(volumesBefore);
    expect(mountsUnder(stateDir).filter((mp) => new RegExp(`${DRIVER}\\.[0-9a-f]{64}$`).test(mp))).toEqual([]);
    // No manager of B was ever opened, and A's has no container from these.
    expect(managers.has(TENANT_B)).toBe(false);
    if (managers.has(TENANT_A)) expect((await managers.get(TENANT_A)!).loanTable()).toEqual([]);
    expect((await docker('ps', '-aq', '--filter', `label=ephemera.test=${LABEL}`)).stdout.trim()).toBe('');
  }, 120_000);

  it("lending: a tenant's volume-driver container (allocation pool) borrows from its running harvest-pool peer, and gives back when the peer stops", async () => {
    const tokenA = await ensureVolumeToken(stateDir, TENANT_A);
    // Profiles from the volume options (mem= peak memory, file= largest file), as the thesis' mix.
    const peer = await runDetached(['-m', '300m', '--mount', mountOpt({ token: tokenA, mem: '4m', file: '0' }), images.busybox!, 'sleep', '600']);
    await bound(peer);
    const io = await runDetached(['-u', '1000', '-m', '150m', '--mount', mountOpt({ token: tokenA, mem: '2m', file: '256m' }), images.busybox!, 'sleep', '600']);
    const v = await bound(io);
    const manager = await managers.get(TENANT_A)!;
    await until(() => manager.loanTable(), (t) => t.length === 1, 20_000, 'a loan from the peer to the IO container');
    const limit = readNumber(path.join(v.container!.cgroup, 'memory.limit_in_bytes'));
    console.log(`[volumes] IO container's limit while its peer runs: ${(limit / MiB).toFixed(1)} MiB (its own 150 MiB), loans ${JSON.stringify(manager.loanTable())}`);
    expect(limit).toBeGreaterThan(250 * MiB);
    expect(manager.loanTable()[0]).toMatchObject({ lender: peer, borrower: io });
    const w = await docker('exec', io, 'dd', 'if=/dev/zero', 'of=/tmp/big', 'bs=1M', 'count=200');
    expect(w.code, w.stderr).toBe(0);
    expect(oomKills(v.container!.cgroup)).toBe(0);
    // The mount reports to the tenant's manager.
    await until(() => manager.status().containers.find((c) => c.id === io)?.mountConnected ?? false, (x) => x, 10_000, 'the IO mount linked to its manager');

    expect((await docker('rm', '-f', peer)).code).toBe(0);
    await until(() => readNumber(path.join(v.container!.cgroup, 'memory.limit_in_bytes')), (l) => l === 150 * MiB, 30_000, "the IO container's limit back at 150 MiB");
    await manager.idle();
    expect(manager.loanTable()).toEqual([]);
    expect(manager.containerIds()).toEqual([io]);
    expect(oomKills(v.container!.cgroup)).toBe(0);
    expect((await docker('rm', '-f', '-v', io)).code).toBe(0);
    await plugin.idle();
    await until(() => manager.containerIds(), (ids) => ids.length === 0, 10_000, 'the manager forgot the stopped container');
  }, 180_000);
  it("the same through a compose file run by Debian's docker-compose: /tmp is fuse.ephemera and charged, the 2 × 60 + 160 MiB writer in 128 MiB exits 0, `down -v` leaves nothing", async () => {
    const project = `t16${run16.replace(/[^a-z0-9]/g, '')}`;
    const dir = fs.mkdtempSync(path.join(stateDir, 'compose-'));
    const indented = WRITER.trim().split('\n').map((l) => `          ${l}`).join('\n');
    fs.writeFileSync(
      path.join(dir, 'docker-compose.yml'),
      `version: "2.4"
services:
  fn:
    image: ${images.busybox}
    command: ["sleep", "600"]
    user: "1000"
    mem_limit: 128m
    labels: { ephemera.test: "${LABEL}" }
    volumes: ["tmp:/tmp"]
  writer:
    image: ${images.fn}
    user: "1000"
    mem_limit: 128m
    labels: { ephemera.test: "${LABEL}" }
    volumes: ["tmpw:/tmp"]
    command:
      - python3
      - -c
      - |
${indented}
volumes:
  tmp:
    driver: ${DRIVER}
    driver_opts: { size: 64m }
  tmpw:
    driver: ${DRIVER}
`,
    );
    const compose = (...args: string[]) => sh('docker-compose', ['-p', project, ...args], 240_000, dir);
    let cgroup: string | undefined;
    try {
      const up = await compose('up', '-d', 'fn');
      expect(up.code, up.stderr).toBe(0);
      const id = (await compose('ps', '-q', 'fn')).stdout.trim();
      const v = await bound(id);
      cgroup = v.container!.cgroup;
      expect(v.name).toBe(`${project}_tmp`);
      expect(v.sizeQuota).toBe(64 * MiB);
      const m = await docker('exec', id, 'sh', '-c', 'grep " /tmp " /proc/mounts && dd if=/dev/zero of=/tmp/a bs=1M count=32 2>/dev/null && id -u');
      expect(m.code, m.stderr).toBe(0);
      expect(m.stdout).toMatch(/^\S+ \/tmp fuse\.ephemera .*\n1000\n$/);
      await until(() => memoryStat(cgroup!).get('shmem')!, (b) => b >= 32 * MiB, 20_000, 'the compose container charged for its /tmp');
      const w = await compose('run', '--rm', 'writer');
      expect(w.code, w.stderr).toBe(0);
      expect(w.stdout.trim()).toMatch(/done$/);
      const down = await compose('down', '-v');
      expect(down.code, down.stderr).toBe(0);
      await plugin.idle();
      expect(plugin.driver.list().filter((x) => x.name.startsWith(`${project}_`))).toEqual([]);
      expectNothingLeft(v, cgroup);
      expect(mountsUnder(stateDir).filter((mp) => mp.includes(`${DRIVER}.${project}_`))).toEqual([]);
    } finally {
      await compose('down', '-v', '-t', '1');
    }
  }, 400_000);
});
