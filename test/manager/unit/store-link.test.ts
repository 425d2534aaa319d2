// The manager's side of the store link (mounts report, the manager answers with budgets and
// evictions), its status and metrics over the socket, and the `ephemera manager` commands: a real
// link on a Unix socket in a temporary state dir, the limits in memory.
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  LinkClient,
  managerSocketPath,
  readTenantToken,
  ToManager,
  ToMount,
  type LinkErrorReply,
  type ToManagerMessage,
  type ToMountMessage,
} from '../../../link/index';
import { MountPeer, type MountHandlers } from '../../../fusefs/daemon/index';
import { fetchManagerMetrics, fetchManagerStatus, listManagerTenants, type TenantManager } from '../../../manager/index';
import { formatStatusTable, registerManagerCommands } from '../../../manager/commands';
import { BORROWER, harness, LENDER, MiB, needOf, until, type Harness } from './fixture';

let h: Harness;
const peers: MountPeer[] = [];
beforeEach(async () => {
  h = await harness();
});
afterEach(async () => {
  for (const p of peers.splice(0)) await p.close().catch(() => undefined);
  await h.cleanup();
});

const NEED = needOf(BORROWER, 150 * MiB);
const ignore = () => undefined;

/** A mount as the node daemon runs one: it records budgets and what it was asked to evict. */
function mountOf(usageBytes: number, limitBytes: number) {
  const seen = { budgets: [] as number[], shrinks: [] as number[], evicts: [] as number[] };
  let hold: Promise<void> | undefined;
  const handlers: MountHandlers = {
    read: () => ({ memoryBytes: usageBytes / 2, diskBytes: 0, usageBytes, limitBytes }),
    onBudget: (l) => void seen.budgets.push(l),
    evict: async (b) => {
      seen.evicts.push(b);
      return usageBytes;
    },
    shrink: async (target) => {
      seen.shrinks.push(target);
      if (hold) await hold;
      return usageBytes / 4;
    },
  };
  return { seen, handlers, holdShrinks: (p: Promise<void>) => (hold = p) };
}

async function connect(extra: { onManagerError?: (e: LinkErrorReply) => void } = {}): Promise<MountPeer> {
  const p = await MountPeer.connect({ tenant: 'acme', stateDir: h.stateDir, reconnect: false, ...extra });
  peers.push(p);
  return p;
}

async function withLink(): Promise<TenantManager> {
  return h.open({ listen: undefined, heartbeat: { intervalMs: 1000, timeoutMs: 3000 } });
}

describe('store link: mounts report, the manager decides', () => {
  it('link: a mount that attaches learns its budget; the manager takes its usage; a plan that lowers it asks it to shrink first', async () => {
    const m = await withLink();
    expect(m.endpoint).toBeDefined();
    const lender = await h.add(m, 'lender', 300 * MiB, LENDER);
    await h.add(m, 'borrower', 150 * MiB, BORROWER);
    const peer = await connect();
    expect(peer.connected).toBe(true);
    const mount = mountOf(40 * MiB, 999);
    await peer.attach('lender', mount.handlers);
    // The mount believed 999 B: the manager corrects it.
    await until(() => mount.seen.budgets.includes(300 * MiB), 2000, 'budget on attach');
    await until(() => m.status().containers.find((c) => c.id === 'lender')!.mountConnected, 2000, 'usage received');
    expect(m.status().containers.find((c) => c.id === 'lender')).toMatchObject({ usageBytes: 40 * MiB, storeMemoryBytes: 20 * MiB });
    expect(m.status().mounts).toBe(1);
    void m.invoke('lender').catch(ignore);
    await until(() => lender.started === 1, 2000, 'lender runs');
    const outcome = await m.beginRun('borrower');
    expect(outcome.ok).toBe(true);
    // Before a lower the mount is always asked, with the limit it must fit under.
    expect(mount.seen.shrinks).toEqual([300 * MiB - NEED]);
    await until(() => mount.seen.budgets.at(-1) === 300 * MiB - NEED, 2000, 'the lowered budget');
    // Its answer is the manager's new reading: what it freed went to disk.
    expect(m.status().containers.find((c) => c.id === 'lender')).toMatchObject({ usageBytes: 10 * MiB, storeDiskBytes: 30 * MiB });
    peer.stats('lender', { inodes: 3, memoryBytes: 1, diskBytes: 2, spills: 1, promotions: 0 });
    await peer.close();
    await until(() => !m.status().containers.find((c) => c.id === 'lender')!.mountConnected, 2000, 'disconnect seen');
    const text = await m.metrics.registry.metrics();
    expect(text).toMatch(/ephemera_manager_link_messages_total\{type="usage",tenant="acme"\} [1-9]/);
  });

  it('link: a mount that does not answer an eviction in time fails the plan (E_EVICT_TIMEOUT); nothing was changed', async () => {
    const m = await h.open({ listen: undefined, evictTimeoutMs: 100 });
    const lender = await h.add(m, 'lender', 300 * MiB, LENDER);
    await h.add(m, 'borrower', 150 * MiB, BORROWER);
    const peer = await connect();
    const mount = mountOf(40 * MiB, 300 * MiB);
    mount.holdShrinks(new Promise(() => undefined));
    await peer.attach('lender', mount.handlers);
    await until(() => m.status().containers.find((c) => c.id === 'lender')!.mountConnected, 2000, 'usage received');
    void m.invoke('lender').catch(ignore);
    await until(() => lender.started === 1, 2000, 'lender runs');
    const outcome = await m.beginRun('borrower');
    expect(outcome.failure).toMatchObject({ code: 'E_EVICT_TIMEOUT', step: { kind: 'evict', container: 'lender' } });
    expect(h.writer.log).toEqual([]);
    expect(m.loanTable()).toEqual([]);
  });

  it('link: an alarm over the link is answered with the budget the safeguard raised', async () => {
    const m = await withLink();
    await h.add(m, 'donor', 400 * MiB, LENDER);
    await h.add(m, 'alarmed', 100 * MiB, LENDER);
    const peer = await connect();
    const mount = mountOf(90 * MiB, 100 * MiB);
    await peer.attach('alarmed', mount.handlers);
    await until(() => mount.seen.budgets.length === 1, 2000, 'first budget');
    peer.alarm('alarmed', 24 * MiB, false);
    await until(() => mount.seen.budgets.includes(124 * MiB), 2000, 'the raised budget');
    expect(m.loanTable()).toEqual([{ lender: 'donor', borrower: 'alarmed', bytes: 24 * MiB }]);
  });

  it('link: refuses reports for unknown containers, a second mount for one container, stray shrink-ready answers and control peers', async () => {
    const m = await withLink();
    await h.add(m, 'c', 100 * MiB, LENDER);
    const errors: LinkErrorReply[] = [];
    const first = await connect({ onManagerError: (e) => void errors.push(e) });
    await first.attach('c', mountOf(MiB, 100 * MiB).handlers);
    await until(() => m.status().containers[0]!.mountConnected, 2000, 'first mount reported');
    await first.attach('elsewhere', mountOf(MiB, MiB).handlers);
    first.link.send({ type: 'shrink-ready', containerId: 'c', requestId: 'never-asked', usageBytes: 0 });
    await until(() => errors.length === 2, 2000, 'two refusals');
    expect(errors.map((e) => e.code).sort()).toEqual(['E_BAD_INPUT', 'E_UNKNOWN_CONTAINER']);
    const secondErrors: LinkErrorReply[] = [];
    const second = await connect({ onManagerError: (e) => void secondErrors.push(e) });
    await second.attach('c', mountOf(MiB, 100 * MiB).handlers);
    await until(() => secondErrors.length === 1, 2000, 'second mount refused');
    expect(secondErrors[0]!.code).toBe('E_FORBIDDEN');
    const controlErrors: LinkErrorReply[] = [];
    const control = new LinkClient<ToMountMessage, ToManagerMessage>({
      endpoint: { socketPath: managerSocketPath(h.stateDir, 'acme') },
      tenant: 'acme',
      token: await readTenantToken(h.stateDir, 'acme'),
      role: 'control',
      inbound: ToMount,
      outbound: ToManager,
      reconnect: false,
      onMessage: ignore,
      onPeerError: (e) => void controlErrors.push(e),
    });
    await control.start();
    control.send({ type: 'alarm', containerId: 'c', shortfallBytes: 1, oomPaused: false });
    await until(() => controlErrors.length === 1, 2000, 'control peer refused');
    expect(controlErrors[0]!.code).toBe('E_FORBIDDEN');
    await control.close();
    expect(() => first.detach('c')).not.toThrow();
    await expect(first.reportUsage('c')).rejects.toMatchObject({ code: 'E_UNKNOWN_CONTAINER' });
  });

  it('link: MountPeer needs a token or a state dir to read it from', async () => {
    await expect(MountPeer.connect({ tenant: 'acme' })).rejects.toMatchObject({ code: 'E_BAD_OPTION' });
  });
});

describe('status and metrics over the socket, and the `ephemera manager` commands', () => {
  it('status: fetchManagerStatus/Metrics read a live manager; listManagerTenants finds its socket; none answering is E_NO_MANAGER', async () => {
    const m = await withLink();
    await h.add(m, 'lender', 300 * MiB, LENDER, { limitBytes: 280 * MiB });
    await h.add(m, 'borrower', 150 * MiB, BORROWER, { limitBytes: 170 * MiB });
    const status = await fetchManagerStatus(h.stateDir, 'acme');
    expect(status).toMatchObject({ tenant: 'acme', sharing: true, mounts: 0, loans: [{ lender: 'lender', borrower: 'borrower', bytes: 20 * MiB }] });
    expect(status.containers.map((c) => [c.id, c.pool, c.limitBytes])).toEqual([['lender', 'harvest', 280 * MiB], ['borrower', 'allocation', 170 * MiB]]);
    expect(await fetchManagerMetrics(h.stateDir, 'acme')).toMatch(/ephemera_manager_limit_bytes\{container="lender",tenant="acme"\} 293601280/);
    expect(await listManagerTenants(h.stateDir)).toEqual(['acme']);
    expect(await listManagerTenants(`${h.stateDir}/nothing-here`)).toEqual([]);
    await m.close();
    await expect(fetchManagerStatus(h.stateDir, 'acme', undefined, 500)).rejects.toMatchObject({ code: 'E_NO_MANAGER' });
  });

  it('status: the table shows each container, its pool and limits in MiB, and each loan', () => {
    const table = formatStatusTable([
      {
        tenant: 'acme', pid: 7, uptimeMs: 1, sharing: true, mounts: 1,
        plans: { executed: 4, rolledBack: 1, inconsistent: 0 },
        containers: [
          { id: 'aaaaaaaaaaaaXX', function: 'io', workflow: '', pool: 'allocation', running: true, queued: 2, initialLimitBytes: 150 * MiB, limitBytes: 160 * MiB, usageBytes: MiB, storeMemoryBytes: 0, storeDiskBytes: 0, mountConnected: true, nonHarvestableUntilMs: null, profile: null },
        ],
        loans: [{ lender: 'bbbbbbbbbbbbYY', borrower: 'aaaaaaaaaaaaXX', bytes: 10 * MiB, returnAttempts: 2 }],
      },
      { tenant: 'globex', pid: 8, uptimeMs: 1, sharing: false, mounts: 0, plans: { executed: 0, rolledBack: 0, inconsistent: 0 }, containers: [], loans: [] },
    ]);
    const lines = table.split('\n');
    expect(lines[0]).toBe('tenant acme  pid 7  sharing on  mounts 1  plans ok 4 rolled back 1 inconsistent 0');
    expect(lines[2]).toMatch(/^ {2}aaaaaaaaaaaa +io +allocation +yes +2 +150\.0 +160\.0 +1\.0 +0\.0 +0\.0 +yes *$/);
    expect(lines[3]).toBe('  loan bbbbbbbbbbbb → aaaaaaaaaaaa  10.0 MiB  (return pending, 2 attempts)');
    expect(lines).toContain('  no loans');
  });

  it('status: `ephemera manager status --json` and `metrics` print what the socket says; no manager is exit 2 with E_NO_MANAGER once', async () => {
    const m = await withLink();
    await h.add(m, 'c', 64 * MiB, LENDER);
    const out: string[] = [];
    const err: string[] = [];
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => (err.push(String(s)), true));
    const exitCode = process.exitCode;
    try {
      const run = (...args: string[]) => {
        const program = new Command().exitOverride();
        registerManagerCommands(program);
        return program.parseAsync(['node', 'ephemera', 'manager', ...args]);
      };
      await run('status', '--json', '--state-dir', h.stateDir);
      expect(JSON.parse(out.join(''))).toMatchObject([{ tenant: 'acme', containers: [{ id: 'c', limitBytes: 64 * MiB }] }]);
      out.length = 0;
      await run('status', '--tenant', 'acme', '--state-dir', h.stateDir);
      expect(out.join('')).toMatch(/^tenant acme {2}pid \d+ {2}sharing on/);
      out.length = 0;
      await run('metrics', '--state-dir', h.stateDir);
      expect(out.join('')).toContain('ephemera_manager_limit_bytes{container="c",tenant="acme"} 67108864');
      expect(process.exitCode).toBe(exitCode);
      await run('status', '--state-dir', `${h.stateDir}/none`);
      expect(err.join('')).toMatch(/^E_NO_MANAGER: no tenant manager socket under /);
      expect(process.exitCode).toBe(2);
      err.length = 0;
      await m.close();
      await run('metrics', '--tenant', 'acme', '--state-dir', h.stateDir);
      expect(err.join('')).toMatch(/^E_NO_MANAGER: tenant acme: /);
    } finally {
      o.mockRestore();
      e.mockRestore();
      process.exitCode = exitCode;
    }
  });
});
