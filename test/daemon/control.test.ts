import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonClient } from '../../fusefs/daemon/client';
import { cgroupV1Unavailable, createTestCgroup } from '../support/cgroups';
import { skipLoudly } from '../support/mount';
import { cleanupStateDir, makeStateDir, MiB, mountsUnder, startDaemon, type TestDaemon } from './support';

const skip = skipLoudly('node daemon control API');

describe.skipIf(skip)('node daemon: control API, isolation, metrics', () => {
  let stateDir: string;
  let daemon: TestDaemon | undefined;
  let client: DaemonClient;

  beforeAll(async () => {
    stateDir = makeStateDir();
    daemon = await startDaemon(stateDir);
    client = await daemon.client();
    await client.addMount({ id: 'alpha', budget: 4 * MiB, sizeQuota: 64 * MiB, inodeQuota: 1000, owner: 'tenant-a' });
    await client.addMount({ id: 'beta', budget: 4 * MiB, sizeQuota: 64 * MiB, inodeQuota: 1000, owner: 'tenant-b' });
  });

  afterAll(async () => {
    client?.close();
    await daemon?.stop();
    if (stateDir) cleanupStateDir(stateDir);
  });

  const state = async () => JSON.stringify(await client.allStats());

  it('the control socket is mode 0600 and the parent of mount points is a shared mount', () => {
    expect(fs.statSync(daemon!.socket).mode & 0o777).toBe(0o600);
    const parent = String(daemon!.ready.mountsDir);
    const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === parent);
    expect(line, 'the mounts parent is a mount point').toBeDefined();
    expect(line).toMatch(/ shared:\d+/);
  });

  it('malformed and unknown messages get an error reply and change nothing', async () => {
    const before = await state();
    const bad = [
      'not json at all',
      '[]',
      'null',
      '{"type":"format-disk"}',
      '{"no":"type"}',
      '{"type":"add-mount","id":"../escape","budget":0,"sizeQuota":0,"inodeQuota":0,"owner":"x"}',
      '{"type":"add-mount","id":"gamma","budget":-5,"sizeQuota":0,"inodeQuota":0,"owner":"x"}',
      '{"type":"add-mount","id":"gamma","budget":0,"sizeQuota":0,"inodeQuota":0,"owner":"x","extra":1}',
      '{"type":"add-mount","id":"gamma","budget":0,"sizeQuota":0,"inodeQuota":0,"owner":"x","path":"relative/dir"}',
      '{"type":"set-budget","id":"alpha","budget":"lots"}',
      '{"type":"set-budget","id":"alpha","budget":1.5}',
      '{"type":"set-quotas","id":"alpha"}',
      '{"type":"evict","id":"alpha"}',
      '{"type":"remove-mount"}',
    ];
    for (const line of bad) {
      const reply = await client.send(line);
      expect(reply.ok, line).toBe(false);
      expect(reply).toMatchObject({ code: 'E_BAD_MESSAGE' });
    }
    // Well-formed but impossible: stable codes, no change either.
    expect(await client.request({ type: 'set-budget', id: 'nosuch', budget: 1 })).toMatchObject({ ok: false, code: 'E_UNKNOWN_MOUNT' });
    expect(await client.request({ type: 'remove-mount', id: 'nosuch' })).toMatchObject({ ok: false, code: 'E_UNKNOWN_MOUNT' });
    expect(
      await client.request({ type: 'add-mount', id: 'alpha', budget: 0, sizeQuota: 0, inodeQuota: 0, owner: 'x' }),
    ).toMatchObject({ ok: false, code: 'E_EXISTS' });
    expect(
      await client.request({ type: 'add-mount', id: 'gamma', path: '/nonexistent/ephemera/dir', budget: 0, sizeQuota: 0, inodeQuota: 0, owner: 'x' }),
    ).toMatchObject({ ok: false, code: 'E_NO_MOUNTPOINT' });
    expect(
      await client.request({ type: 'add-mount', id: 'gamma', spillDir: '/dev/shm/ephemera-spill-test', budget: 0, sizeQuota: 0, inodeQuota: 0, owner: 'x' }),
    ).toMatchObject({ ok: false, code: 'E_BAD_OPTION' });
    // The seq of a request comes back with its reply, also on errors.
    expect(await client.send('{"type":"ping","seq":"abc"}')).toMatchObject({ ok: true, seq: 'abc' });
    expect(await client.send('{"type":"nope","seq":7}')).toMatchObject({ ok: false, seq: 7 });
    expect(await state()).toBe(before);
    expect((await client.list()).map((m) => m.id).sort()).toEqual(['alpha', 'beta']);
    expect(fs.existsSync(path.join(stateDir, 'mounts', 'gamma'))).toBe(false);
    expect(fs.existsSync(path.join(stateDir, 'records', 'gamma.json'))).toBe(false);
  });

  it('two mounts are isolated: no path escapes, separate inode tables and devices', async () => {
    const [a, b] = [path.join(stateDir, 'mounts', 'alpha'), path.join(stateDir, 'mounts', 'beta')];
    fs.writeFileSync(path.join(a, 'secret'), 'alpha data');
    fs.writeFileSync(path.join(b, 'other'), 'beta data');
    // '..' at a mount's root is the parent directory, not the sibling's contents through the store.
    expect(fs.existsSync(path.join(a, '..', 'beta', 'secret'))).toBe(false);
    expect(() => fs.readFileSync(path.join(b, 'secret'))).toThrow(/ENOENT/);
    expect(fs.readdirSync(a)).toEqual(['secret']);
    expect(fs.readdirSync(b)).toEqual(['other']);
    expect(() => fs.linkSync(path.join(a, 'secret'), path.join(b, 'stolen'))).toThrow(/EXDEV/);
    const sa = fs.statSync(path.join(a, 'secret'));
    const sb = fs.statSync(path.join(b, 'other'));
    expect(sa.dev).not.toBe(sb.dev);
    const statsA = await client.stats('alpha', true);
    const statsB = await client.stats('beta', true);
    expect(statsA.inodeTable!.map((i) => i.ino)).toEqual([sa.ino]);
    expect(statsB.inodeTable!.map((i) => i.ino)).toEqual([sb.ino]);
    // Moving alpha's inode leaves beta's tiers alone.
    const ev = await client.evict('alpha', 1, true);
    expect(ev.eviction.spilled).toBe(1);
    expect((await client.stats('alpha', true)).inodeTable![0]!.tier).toBe('disk');
    expect((await client.stats('beta', true)).inodeTable![0]!.tier).toBe('memory');
    expect(fs.readFileSync(path.join(a, 'secret'), 'utf8')).toBe('alpha data');
    // Spill dirs are per mount and private.
    expect(fs.statSync(statsA.spillDir).mode & 0o777).toBe(0o700);
    expect(statsA.spillDir).not.toBe(statsB.spillDir);
  });

  it('serves Prometheus metrics on the socket: per-mount tiers, inodes, spills, per-opcode counts', async () => {
    const text = await client.metrics();
    expect(text).toMatch(/ephemera_mount_bytes\{mount="alpha",owner="tenant-a",tier="disk"\} [1-9]\d*/);
    expect(text).toMatch(/ephemera_mount_inodes\{mount="beta",owner="tenant-b"\} 2/);
    expect(text).toMatch(/ephemera_mount_spills_total\{mount="alpha",owner="tenant-a"\} [1-9]/);
    expect(text).toMatch(/ephemera_mount_requests_total\{mount="alpha",owner="tenant-a",opcode="CREATE"\} [1-9]/);
    expect(text).toMatch(/ephemera_mount_request_errors_total\{mount="beta",owner="tenant-b",opcode="\w+"\} [1-9]/);
    expect(text).toMatch(/ephemera_mounts 2/);
    expect(text).toMatch(/ephemera_daemon_process_resident_memory_bytes \d+/);
  });

  it.skipIf(cgroupV1Unavailable() !== undefined)('with a cgroup attached, evict goes through the memory adapter and promote is refused (a daemon copy would charge the daemon)', async () => {
    const cg = await createTestCgroup({ limitBytes: 256 * MiB });
    try {
      await client.addMount({ id: 'gamma', budget: 0, sizeQuota: 64 * MiB, inodeQuota: 100, owner: 'tenant-a' });
      expect(await client.request({ type: 'attach-cgroup', id: 'gamma', cgroup: cg.dir, sizeHint: 1 })).toMatchObject({ ok: true });
      const dir = (await client.stats('gamma')).path;
      fs.writeFileSync(path.join(dir, 'f'), Buffer.alloc(MiB, 7));
      // Closed and small: the adapter promotes it to memory in the room under the mark.
      // RELEASE reaches the daemon after close() returns (the kernel sends it asynchronously), so
      // wait for the closed state too, not only for the tier.
      const settled = async () => {
        const row = (await client.stats('gamma', true)).inodeTable![0]!;
        return row.tier === 'memory' && row.openCount === 0;
      };
      const deadline = Date.now() + 5000;
      while (!(await settled()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const table = (await client.stats('gamma', true)).inodeTable!;
      expect(table[0]).toMatchObject({ tier: 'memory', openCount: 0, lastOpenMs: expect.any(Number), lastCloseMs: expect.any(Number) });
      const ev = await client.request({ type: 'evict', id: 'gamma', bytes: 1, urgent: true });
      expect(ev).toMatchObject({ ok: true, eviction: { spilled: 1, freedBytes: MiB } });
      const after = await client.stats('gamma', true);
      expect(after.inodeTable![0]!.tier).toBe('disk');
      expect(after.spills).toBe(1); // the adapter's counters, not the stood-down budget keeper's
      expect(await client.request({ type: 'promote', id: 'gamma' })).toMatchObject({ ok: false, code: 'E_BAD_OPTION' });
      expect(fs.readFileSync(path.join(dir, 'f')).equals(Buffer.alloc(MiB, 7))).toBe(true);
    } finally {
      await client.request({ type: 'remove-mount', id: 'gamma' });
      await cg.remove();
    }
  });

  it('remove-mount unmounts and removes its directories; the id can be added again', async () => {
    const beta = await client.stats('beta');
    await client.removeMount('beta');
    expect(mountsUnder(beta.path)).toEqual([]);
    expect(fs.existsSync(beta.path)).toBe(false);
    expect(fs.existsSync(beta.spillDir)).toBe(false);
    expect(fs.existsSync(path.join(stateDir, 'records', 'beta.json'))).toBe(false);
    // A removal ends the connection on purpose: no "ended from outside" error in the daemon's log.
    await new Promise((r) => setTimeout(r, 200));
    expect(daemon!.stderrText()).not.toContain('ended from outside');
    await client.addMount({ id: 'beta', budget: 0, sizeQuota: 0, inodeQuota: 0, owner: 'tenant-b' });
    expect(fs.readdirSync(beta.path)).toEqual([]);
    expect(execFileSync('findmnt', ['-no', 'FSTYPE', beta.path], { encoding: 'utf8' }).trim()).toBe('fuse.ephemera');
  });
});
