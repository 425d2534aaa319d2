// The safeguard (alarms), blocked returns and their retries, and reconciliation after a restart,
// over the in-memory limit writer.
import type Docker from 'dockerode';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LABEL_INITIAL_LIMIT, LABEL_PROFILE_FILE, LABEL_PROFILE_PEAK, managerLabels, TenantManager } from '../../../manager/index';
import { DEFAULT_POLICY_CONFIG } from '../../../policy/index';
import { BORROWER, harness, LENDER, MiB, needOf, quiet, RaisingWriter, refused, setCgroupUsage, until, type Harness } from './fixture';

let h: Harness;
afterEach(async () => {
  await h.cleanup();
});

const NEED = needOf(BORROWER, 150 * MiB);
const ignore = () => undefined;

describe('alarm: the safeguard', () => {
  beforeEach(async () => {
    h = await harness(new RaisingWriter());
  });

  it('alarm: a lender short of memory takes its loans back, its own raise first, and is not harvested during the cool-down', async () => {
    const m = await h.open();
    const lender = await h.add(m, 'lender', 300 * MiB, LENDER);
    const borrower = await h.add(m, 'borrower', 150 * MiB, BORROWER);
    void m.invoke('lender').catch(ignore);
    void m.invoke('borrower').catch(ignore);
    await until(() => lender.started === 1 && borrower.started === 1, 2000, 'both run');
    await m.idle();
    expect(m.loanTable()).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: NEED }]);
    const writes = h.writer.log.length;
    const raised = (h.writer as RaisingWriter).raisedNow.length;
    const out = await m.alarm('lender', 32 * MiB, false);
    expect(out.raisedBytes).toBe(NEED);
    expect(out.uncoveredBytes).toBe(0);
    expect(out.responseMs).toBeGreaterThanOrEqual(0);
    expect(out.plan.steps.map((s) => `${s.kind} ${s.container}`)).toEqual(['raiseLimit lender', 'evict borrower', 'lowerLimit borrower']);
    // The kernel raise (raiseNow) before the engine's record, and before the borrower comes down.
    expect((h.writer as RaisingWriter).raisedNow.slice(raised)).toEqual([['lender', 300 * MiB]]);
    expect(h.writer.log.slice(writes)).toEqual([['lender', 300 * MiB], ['borrower', 150 * MiB]]);
    expect(m.loanTable()).toEqual([]);
    const st = m.status().containers.find((c) => c.id === 'lender')!;
    expect(st.nonHarvestableUntilMs).toBeGreaterThan(performance.now() + DEFAULT_POLICY_CONFIG.safeguard.coolDownMs - 5_000);
    expect(st.pool).toBe('self-sufficient');
    // Cooling down, the lender does not lend to a borrower that starts again.
    borrower.finish();
    await until(() => borrower.started === 1 && !m.status().containers.find((c) => c.id === 'borrower')!.running, 2000, 'borrower drained');
    void m.invoke('borrower').catch(ignore);
    await until(() => borrower.started === 2, 2000, 'borrower runs again');
    expect(borrower.seen[1]).toBe(150 * MiB);
  });

  it('alarm: a shortfall beyond its loans is covered by an emergency loan from the largest spare, running or not', async () => {
    const m = await h.open();
    await h.add(m, 'big', 300 * MiB, LENDER);
    await h.add(m, 'small', 120 * MiB, LENDER);
    await h.add(m, 'alarmed', 200 * MiB, LENDER);
    const out = await m.alarm('alarmed', 40 * MiB);
    expect(out).toMatchObject({ raisedBytes: 40 * MiB, uncoveredBytes: 0 });
    expect(m.loanTable()).toEqual([{ lender: 'big', borrower: 'alarmed', bytes: 40 * MiB }]);
    expect([m.limitOf('big'), m.limitOf('small'), m.limitOf('alarmed')]).toEqual([260 * MiB, 120 * MiB, 240 * MiB]);
  });

  it('alarm: an OOM-paused container gets at least the paused grant; with no donor the shortfall stays uncovered', async () => {
    const m = await h.open();
    await h.add(m, 'alone', 200 * MiB, LENDER);
    const none = await m.alarm('alone', 1 * MiB);
    expect(none).toMatchObject({ raisedBytes: 0, uncoveredBytes: 1 * MiB });
    await h.add(m, 'donor', 400 * MiB, LENDER);
    const paused = await m.alarm('alone', 1 * MiB, true);
    // max(16 MiB, 25 % of 200 MiB) = 50 MiB, whatever the alarm said.
    expect(paused).toMatchObject({ raisedBytes: 50 * MiB, uncoveredBytes: 0 });
    expect(() => m.alarm('nobody', 1)).toThrow(expect.objectContaining({ code: 'E_UNKNOWN_CONTAINER' }));
  });

  it('alarm: jumps the queue of plans waiting behind the running one', async () => {
    const m = await h.open();
    const lender = await h.add(m, 'lender', 400 * MiB, LENDER);
    await h.add(m, 'b1', 150 * MiB, BORROWER);
    await h.add(m, 'b2', 150 * MiB, BORROWER);
    await h.add(m, 'alarmed', 100 * MiB, LENDER);
    void m.invoke('lender').catch(ignore);
    await until(() => lender.started === 1, 2000, 'lender runs');
    await m.idle();
    let open!: () => void;
    h.writer.gate = new Promise<void>((r) => (open = r));
    const first = m.beginRun('b1');
    await new Promise((r) => setTimeout(r, 20)); // b1's plan is in its first write
    const second = m.beginRun('b2');
    const alarm = m.alarm('alarmed', 8 * MiB);
    h.writer.gate = undefined;
    open();
    await Promise.all([first, second, alarm]);
    const order = h.writer.log.map(([id]) => id).filter((id) => id !== 'lender');
    expect(order.indexOf('alarmed')).toBeLessThan(order.indexOf('b2'));
    expect(order.indexOf('b1')).toBeLessThan(order.indexOf('alarmed'));
  });
});

describe('retry: returns the borrower cannot give back yet', () => {
  beforeEach(async () => {
    h = await harness();
  });

  async function borrowing(usageDir: string) {
    const m = await h.open();
    const lender = await h.add(m, 'lender', 300 * MiB, LENDER);
    const borrower = await h.add(m, 'borrower', 150 * MiB, BORROWER, { cgroupPath: usageDir });
    void m.invoke('lender').catch(ignore);
    const run = m.invoke('borrower');
    await until(() => lender.started === 1 && borrower.started === 1, 2000, 'both run');
    expect(m.loanTable()).toHaveLength(1);
    return { m, borrower, run };
  }

  it('retry: a return blocked by the borrower’s own memory stays a pending loan and goes through once that memory is freed', async () => {
    const dir = await h.cgroup('borrower', 2 * MiB);
    const { m, borrower, run } = await borrowing(dir);
    // The function's own memory now fills its borrowed limit: the limit cannot come down.
    await setCgroupUsage(dir, 150 * MiB + NEED - 1 * MiB);
    borrower.finish();
    await run;
    await until(() => m.counts.executed >= 3, 2000, 'the drain plan ran');
    expect(m.loanTable()).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: NEED, returnAttempts: 1 }]);
    expect(m.limitOf('borrower')).toBe(150 * MiB + NEED);
    await setCgroupUsage(dir, 2 * MiB);
    await until(() => m.loanTable().length === 0, 3000, 'the retry returns the loan');
    await m.idle();
    expect([h.writer.limits.get('lender'), h.writer.limits.get('borrower')]).toEqual([300 * MiB, 150 * MiB]);
    expect(await m.metrics.registry.metrics()).toMatch(/ephemera_manager_plans_total\{trigger="retry",outcome="ok",tenant="acme"\} [1-9]/);
  });

  it('retry: after maxReturnAttempts the return is given up to an alarm and no longer retried', async () => {
    const dir = await h.cgroup('borrower', 2 * MiB);
    const { m, borrower, run } = await borrowing(dir);
    await setCgroupUsage(dir, 150 * MiB + NEED - 1 * MiB);
    borrower.finish();
    await run;
    const max = DEFAULT_POLICY_CONFIG.lending.maxReturnAttempts;
    await until(() => m.loanTable()[0]?.returnAttempts === max, 3000, 'attempts used up');
    const executed = m.counts.executed;
    await new Promise((r) => setTimeout(r, 250)); // five retry periods
    expect(m.counts.executed).toBe(executed);
    expect(m.loanTable()).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: NEED, returnAttempts: max }]);
  });
});

describe('reconcile: after a restart the limits come back to the policy’s view', () => {
  beforeEach(async () => {
    h = await harness();
  });

  it('reconcile: borrowers come down first, lenders go back up by what was freed; nothing is left on loan', async () => {
    const m = await h.open();
    await h.add(m, 'lender', 300 * MiB, LENDER, { limitBytes: 236 * MiB });
    await h.add(m, 'borrower', 150 * MiB, BORROWER, { limitBytes: 214 * MiB });
    await m.reconcile();
    expect(h.writer.log).toEqual([['borrower', 150 * MiB], ['lender', 300 * MiB]]);
    expect(m.loanTable()).toEqual([]);
    expect([m.limitOf('lender'), m.limitOf('borrower')]).toEqual([300 * MiB, 150 * MiB]);
  });

  it('reconcile: a borrower its memory holds up stays above, lenders are raised only by the room there is, the rest stays on loan', async () => {
    const m = await h.open();
    await h.add(m, 'b', 150 * MiB, BORROWER, { limitBytes: 214 * MiB, usageBytes: 200 * MiB });
    await h.add(m, 'l1', 300 * MiB, LENDER, { limitBytes: 236 * MiB });
    // 16 MiB more below initial than any borrower holds: its borrower left with the old manager.
    await h.add(m, 'l2', 300 * MiB, LENDER, { limitBytes: 284 * MiB });
    await m.reconcile();
    expect(m.limitOf('b')).toBe(214 * MiB);
    expect(m.limitOf('l1')).toBe(252 * MiB);
    expect(m.limitOf('l2')).toBe(284 * MiB);
    expect(m.loanTable()).toEqual([
      { lender: 'l1', borrower: 'b', bytes: 48 * MiB, returnAttempts: 1 },
      { lender: 'l2', borrower: 'b', bytes: 16 * MiB, returnAttempts: 1 },
    ]);
    // The borrower's memory is freed before the retry fires: the pending loans come home.
    h.writer.usage.set('b', 0);
    await until(() => m.loanTable().length === 0, 3000, 'the retry returns both loans');
    await m.idle();
    expect([m.limitOf('b'), m.limitOf('l1'), m.limitOf('l2')]).toEqual([150 * MiB, 300 * MiB, 300 * MiB]);
  });

  it('reconcile: a lender whose raise is refused keeps the limit the kernel has', async () => {
    const m = await h.open();
    await h.add(m, 'lender', 300 * MiB, LENDER, { limitBytes: 236 * MiB });
    await h.add(m, 'borrower', 150 * MiB, BORROWER, { limitBytes: 214 * MiB });
    h.writer.fault = (id, bytes) => (id === 'lender' ? refused(id, bytes) : undefined);
    await m.reconcile();
    expect(m.limitOf('borrower')).toBe(150 * MiB);
    expect(m.limitOf('lender')).toBe(236 * MiB);
    expect(h.writer.limits.get('lender')).toBe(236 * MiB);
    expect(m.loanTable()).toEqual([]);
  });

  it('reconcile: recover rebuilds the pool from Docker labels and the kernel limits, then reconciles', async () => {
    h.writer.limits.set('c-lender', 236 * MiB);
    h.writer.limits.set('c-borrower', 214 * MiB);
    h.writer.limits.set('c-nolabel', 64 * MiB);
    const asked: unknown[] = [];
    const docker = {
      listContainers: async (opts: unknown) => {
        asked.push(opts);
        return [
          { Id: 'c-lender', Labels: { 'ephemera.tenant': 'acme', 'ephemera.function': 'cpu', ...managerLabels(300 * MiB, LENDER) } },
          { Id: 'c-borrower', Labels: { 'ephemera.tenant': 'acme', 'ephemera.workflow': 'wf', ...managerLabels(150 * MiB, BORROWER) } },
          { Id: 'c-nolabel', Labels: { 'ephemera.tenant': 'acme', [LABEL_INITIAL_LIMIT]: 'lots', [LABEL_PROFILE_PEAK]: '1', [LABEL_PROFILE_FILE]: '-1' } },
        ];
      },
    } as unknown as Docker;
    const m = await TenantManager.recover(docker, { tenant: 'acme', stateDir: h.stateDir, limitWriter: h.writer, listen: false, logger: quiet, mountGraceMs: 1 });
    h.managers.push(m);
    expect(JSON.parse((asked[0] as { filters: string }).filters)).toEqual({ label: ['ephemera.managed=1', 'ephemera.tenant=acme'] });
    const byId = Object.fromEntries(m.status().containers.map((c) => [c.id, c]));
    expect(byId['c-lender']).toMatchObject({ function: 'cpu', initialLimitBytes: 300 * MiB, limitBytes: 300 * MiB, profile: LENDER });
    expect(byId['c-borrower']).toMatchObject({ function: 'anonymous', workflow: 'wf', limitBytes: 150 * MiB, profile: BORROWER });
    // Unreadable labels: the limit found is the initial one, and no profile.
    expect(byId['c-nolabel']).toMatchObject({ initialLimitBytes: 64 * MiB, profile: null, pool: 'self-sufficient' });
    expect(m.loanTable()).toEqual([]);
  });
});
