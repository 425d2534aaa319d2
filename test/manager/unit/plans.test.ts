// The tenant manager's plans and rollbacks over the in-memory limit writer: no Docker, no root.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isManagerError, type TenantManager } from '../../../manager/index';
import { DEFAULT_POLICY_CONFIG } from '../../../policy/index';
import { BORROWER, GateInvoker, harness, LENDER, MiB, needOf, refused, until, type Harness } from './fixture';

let h: Harness;
beforeEach(async () => {
  h = await harness();
});
afterEach(async () => {
  await h.cleanup();
});

const NEED = needOf(BORROWER, 150 * MiB);

async function lenderAndBorrower(m: TenantManager) {
  const lender = await h.add(m, 'lender', 300 * MiB, LENDER);
  const borrower = await h.add(m, 'borrower', 150 * MiB, BORROWER);
  return { lender, borrower };
}

describe('plan: start and drain', () => {
  it('plan: a borrower starting beside a running lender gets its need before its function runs; the drain gives it back', async () => {
    const m = await h.open();
    const { lender, borrower } = await lenderAndBorrower(m);
    const runL = m.invoke('lender');
    await m.idle();
    expect(m.loanTable()).toEqual([]);
    const runB = m.invoke('borrower', ['x']);
    await until(() => borrower.started === 1, 2000, 'the borrower runs');
    // The loan opened before the function's first instruction.
    expect(borrower.seen).toEqual([150 * MiB + NEED]);
    expect(m.loanTable()).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: NEED }]);
    expect([m.limitOf('lender'), m.limitOf('borrower')]).toEqual([300 * MiB - NEED, 150 * MiB + NEED]);
    // v1 order: the giving side comes down before the receiving side goes up.
    expect(h.writer.log).toEqual([['lender', 300 * MiB - NEED], ['borrower', 150 * MiB + NEED]]);
    borrower.finish();
    await expect(runB).resolves.toMatchObject({ exitCode: 0 });
    await until(() => m.loanTable().length === 0, 2000, 'the drain returns the loan');
    await m.idle();
    expect([h.writer.limits.get('lender'), h.writer.limits.get('borrower')]).toEqual([300 * MiB, 150 * MiB]);
    expect(h.writer.log.slice(2)).toEqual([['borrower', 150 * MiB], ['lender', 300 * MiB]]);
    lender.finish();
    await runL;
    await m.idle();
    expect(m.counts).toEqual({ executed: 4, rolledBack: 0, inconsistent: 0 });
    expect(await m.metrics.registry.metrics()).toMatch(/ephemera_manager_plans_total\{trigger="start",outcome="ok",tenant="acme"\} 2/);
  });

  it('plan: a lender starting gives each running borrower its whole need; its own drain takes it back', async () => {
    const m = await h.open();
    const { lender, borrower } = await lenderAndBorrower(m);
    const runB = m.invoke('borrower');
    await until(() => borrower.started === 1, 2000, 'the borrower runs');
    expect(borrower.seen).toEqual([150 * MiB]); // nobody to borrow from yet
    const runL = m.invoke('lender');
    await until(() => lender.started === 1, 2000, 'the lender runs');
    expect(m.loanTable()).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: NEED }]);
    expect(h.writer.limits.get('borrower')).toBe(150 * MiB + NEED);
    lender.finish();
    await runL;
    await until(() => m.loanTable().length === 0, 2000, "the lender's drain returns its loan");
    expect([m.limitOf('lender'), m.limitOf('borrower')]).toEqual([300 * MiB, 150 * MiB]);
    borrower.finish();
    await runB;
  });

  it('plan: an unprofiled container neither lends nor borrows until setProfile; scope and sharing come from the policy', async () => {
    const m = await h.open();
    const lender = await h.add(m, 'lender', 300 * MiB, LENDER);
    const b = await h.add(m, 'borrower', 150 * MiB, null);
    void m.invoke('lender').catch(() => undefined);
    await until(() => lender.started === 1, 2000, 'lender runs');
    const first = m.invoke('borrower');
    await until(() => b.started === 1, 2000, 'borrower runs');
    expect(b.seen).toEqual([150 * MiB]);
    expect(m.status().containers.find((c) => c.id === 'borrower')!.pool).toBe('self-sufficient');
    b.finish();
    await first;
    await m.idle();
    m.setProfile('borrower', BORROWER);
    expect(m.status().containers.find((c) => c.id === 'borrower')!.pool).toBe('allocation');
    const second = m.invoke('borrower');
    await until(() => b.started === 2, 2000, 'borrower runs again');
    expect(b.seen[1]).toBe(150 * MiB + NEED);
    b.finish();
    await second;
  });

  it('plan: with sharing off nothing is ever lent', async () => {
    const m = await h.open({ policy: { ...DEFAULT_POLICY_CONFIG, pools: { ...DEFAULT_POLICY_CONFIG.pools, sharing: false } } });
    const { lender, borrower } = await lenderAndBorrower(m);
    void m.invoke('lender').catch(() => undefined);
    void m.invoke('borrower').catch(() => undefined);
    await until(() => lender.started === 1 && borrower.started === 1, 2000, 'both run');
    expect(borrower.seen).toEqual([150 * MiB]);
    expect(h.writer.writes).toBe(0);
    expect(m.status().sharing).toBe(false);
  });

  it('plan: beginRun opens the loans of a container that runs its whole life; terminate settles them without touching it', async () => {
    const m = await h.open();
    const { lender } = await lenderAndBorrower(m);
    void m.invoke('lender').catch(() => undefined);
    await until(() => lender.started === 1, 2000, 'lender runs');
    const outcome = await m.beginRun('borrower');
    expect(outcome.ok).toBe(true);
    expect(outcome.plan.trigger).toBe('start');
    expect(outcome.plan.opened).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: NEED }]);
    expect(outcome.decisionMs).toBeGreaterThanOrEqual(0);
    await expect(m.beginRun('borrower')).rejects.toMatchObject({ code: 'E_BAD_INPUT' });
    const writesBefore = h.writer.log.length;
    const settled = await m.terminate('borrower');
    expect(settled.ok).toBe(true);
    // The lender got its memory back; the borrower's own limit was left alone (it is going away).
    expect(h.writer.log.slice(writesBefore)).toEqual([['lender', 300 * MiB]]);
    expect(m.containerIds()).toEqual(['lender']);
    expect(m.loanTable()).toEqual([]);
    expect(() => m.limitOf('borrower')).toThrow(expect.objectContaining({ code: 'E_UNKNOWN_CONTAINER' }));
  });
});

describe('queue: one invocation at a time per container', () => {
  it('queue: jobs run in order, an invoker error rejects only its job, exit codes are counted', async () => {
    const m = await h.open();
    const c = await h.add(m, 'c', 100 * MiB, LENDER);
    const a = m.invoke('c', ['1']);
    const b = m.invoke('c', ['2']);
    const d = m.invoke('c', ['3']);
    await until(() => c.started === 1, 2000, 'first job runs');
    await new Promise((r) => setTimeout(r, 20));
    expect(c.started).toBe(1);
    expect(m.status().containers[0]).toMatchObject({ running: true, queued: 3 });
    c.finish(0);
    await expect(a).resolves.toMatchObject({ exitCode: 0 });
    await until(() => c.started === 2, 2000, 'second job runs');
    c.fail(new Error('runtime went away'));
    await expect(b).rejects.toThrow('runtime went away');
    await until(() => c.started === 3, 2000, 'third job runs');
    c.finish(3);
    await expect(d).resolves.toMatchObject({ exitCode: 3 });
    await m.idle();
    await until(() => !m.status().containers[0]!.running, 2000, 'the queue drained');
    const text = await m.metrics.registry.metrics();
    for (const outcome of ['ok', 'error', 'failed']) expect(text).toMatch(new RegExp(`ephemera_manager_invocations_total\\{outcome="${outcome}",tenant="acme"\\} 1`));
  });

  it('queue: terminate rejects the queued jobs; close rejects what is left and refuses new work', async () => {
    const m = await h.open();
    const c = await h.add(m, 'c', 100 * MiB, LENDER);
    await h.add(m, 'd', 100 * MiB, LENDER);
    const first = m.invoke('c').catch((e: unknown) => e);
    const second = m.invoke('c').catch((e: unknown) => e);
    await until(() => c.started === 1, 2000, 'runs');
    await m.terminate('c');
    expect(isManagerError(await second, 'E_CLOSED')).toBe(true);
    expect(isManagerError(await first, 'E_CLOSED')).toBe(true);
    c.finish();
    const queued = m.invoke('d').catch((e: unknown) => e);
    await m.close();
    expect(isManagerError(await queued, 'E_CLOSED')).toBe(true);
    await expect(m.invoke('d')).rejects.toMatchObject({ code: 'E_CLOSED' });
    await expect(m.beginRun('d')).rejects.toMatchObject({ code: 'E_CLOSED' });
  });

  it('queue: a container adopted without an invoker cannot be invoked until it gets one', async () => {
    const m = await h.open();
    h.writer.limits.set('x', 64 * MiB);
    await m.addContainer({ id: 'x', tenant: 'acme', initialLimitBytes: 64 * MiB, profile: LENDER });
    await expect(m.invoke('x')).rejects.toMatchObject({ code: 'E_NO_INVOKER' });
    const inv = new GateInvoker(h.writer, 'x');
    m.setInvoker('x', inv, '/nonexistent/cgroup');
    const run = m.invoke('x');
    await until(() => inv.started === 1, 2000, 'runs');
    inv.finish();
    await expect(run).resolves.toMatchObject({ exitCode: 0 });
    expect(m.status().containers[0]).toMatchObject({ function: 'anonymous', workflow: '' });
  });
});

describe('adding containers', () => {
  it('refuses another tenant, a duplicate, a bad initial limit, and a container the kernel does not know', async () => {
    const m = await h.open();
    await h.add(m, 'a', 64 * MiB, LENDER);
    await expect(m.addContainer({ id: 'z', tenant: 'globex', initialLimitBytes: MiB, profile: null })).rejects.toMatchObject({ code: 'E_WRONG_TENANT' });
    await expect(m.addContainer({ id: 'a', tenant: 'acme', initialLimitBytes: MiB, profile: null })).rejects.toMatchObject({ code: 'E_DUPLICATE_CONTAINER' });
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      await expect(m.addContainer({ id: 'b', tenant: 'acme', initialLimitBytes: bad, profile: null })).rejects.toMatchObject({ code: 'E_BAD_INPUT' });
    }
    await expect(m.addContainer({ id: 'ghost', tenant: 'acme', initialLimitBytes: MiB, profile: null })).rejects.toMatchObject({ code: 'E_UNKNOWN_CONTAINER' });
    expect(() => m.setProfile('ghost', null)).toThrow(expect.objectContaining({ code: 'E_UNKNOWN_CONTAINER' }));
    expect(m.containerIds()).toEqual(['a']);
  });

  it('adopt: limits found away from the initial ones (a restart mid-loan) become loans again, and a drain returns them', async () => {
    const m = await h.open();
    const lent = 64 * MiB;
    await h.add(m, 'lender', 300 * MiB, LENDER, { limitBytes: 300 * MiB - lent });
    expect(m.loanTable()).toEqual([]); // one side alone explains nothing yet
    const b = await h.add(m, 'borrower', 150 * MiB, BORROWER, { limitBytes: 150 * MiB + lent });
    expect(m.loanTable()).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: lent }]);
    expect(m.status().loans).toEqual([{ lender: 'lender', borrower: 'borrower', bytes: lent }]);
    const run = m.invoke('borrower');
    await until(() => b.started === 1, 2000, 'runs');
    b.finish();
    await run;
    await until(() => m.loanTable().length === 0, 2000, 'the drain returns the adopted loan');
    await m.idle();
    expect([h.writer.limits.get('lender'), h.writer.limits.get('borrower')]).toEqual([300 * MiB, 150 * MiB]);
  });
});

describe('rollback: a failed step undoes the executed prefix', () => {
  /** Two lenders; the second's lower is refused (its usage is above the new limit, as cgroup v1 refuses). */
  async function twoLenders() {
    const m = await h.open();
    const big = { peakMemoryBytes: 1 * MiB, largestFileBytes: 350 * MiB };
    const l1 = await h.add(m, 'l1', 200 * MiB, { peakMemoryBytes: MiB, largestFileBytes: 0 });
    const l2 = await h.add(m, 'l2', 180 * MiB, { peakMemoryBytes: MiB, largestFileBytes: 0 });
    await h.add(m, 'b', 100 * MiB, big);
    void m.invoke('l1').catch(() => undefined);
    void m.invoke('l2').catch(() => undefined);
    await until(() => l1.started === 1 && l2.started === 1, 2000, 'lenders run');
    await m.idle();
    return m;
  }

  it('rollback: the refused lower of the second lender undoes the first loan; limits, view and loan table are as before', async () => {
    const m = await twoLenders();
    // l2 really holds 120 MiB, which no report told the manager: the plan asks for less.
    h.writer.usage.set('l2', 120 * MiB);
    const outcome = await m.beginRun('b');
    expect(outcome.ok).toBe(false);
    expect(outcome.failure).toMatchObject({ code: 'E_LIMIT_WRITE', step: { kind: 'lowerLimit', container: 'l2' } });
    const kinds = outcome.plan.steps.map((s) => `${s.kind} ${s.container}`);
    expect(kinds).toEqual(['evict l1', 'lowerLimit l1', 'raiseLimit b', 'evict l2', 'lowerLimit l2', 'raiseLimit b']);
    // Undo in reverse: b comes back down first, then l1 goes back up.
    const l1Lent = outcome.plan.opened.find((o) => o.lender === 'l1')!.bytes;
    expect(h.writer.log).toEqual([
      ['l1', 200 * MiB - l1Lent],
      ['b', 100 * MiB + l1Lent],
      ['b', 100 * MiB],
      ['l1', 200 * MiB],
    ]);
    for (const [id, mib] of [['l1', 200], ['l2', 180], ['b', 100]] as const) {
      expect(m.limitOf(id)).toBe(mib * MiB);
      expect(h.writer.limits.get(id)).toBe(mib * MiB);
    }
    expect(m.loanTable()).toEqual([]);
    expect(m.counts).toMatchObject({ rolledBack: 1, inconsistent: 0 });
    expect(await m.metrics.registry.metrics()).toMatch(/ephemera_manager_plans_total\{trigger="start",outcome="rolled-back",tenant="acme"\} 1/);
  });

  it('rollback: when the undo fails too, the view adopts the kernel limits and the plan counts as inconsistent', async () => {
    const m = await twoLenders();
    h.writer.usage.set('l2', 120 * MiB);
    // The undo's raise of l1 is refused as well.
    h.writer.fault = (id, bytes) => (id === 'l1' && bytes === 200 * MiB ? refused(id, bytes) : undefined);
    const outcome = await m.beginRun('b');
    expect(outcome.ok).toBe(false);
    expect(m.counts).toMatchObject({ rolledBack: 1, inconsistent: 1 });
    for (const id of ['l1', 'l2', 'b']) expect(m.limitOf(id)).toBe(h.writer.limits.get(id));
    expect(m.limitOf('l1')).toBeLessThan(200 * MiB);
    expect(m.limitOf('b')).toBe(100 * MiB);
  });

  it('rollback: a kernel that enforces another limit than written (E_LIMIT_MISMATCH) is believed, and the prefix undone', async () => {
    const m = await h.open();
    const { lender } = await lenderAndBorrower(m);
    void m.invoke('lender').catch(() => undefined);
    await until(() => lender.started === 1, 2000, 'lender runs');
    await m.idle();
    const cap = 150 * MiB + 16 * MiB;
    h.writer.clamp = (id, v) => (id === 'borrower' ? Math.min(v, cap) : v);
    const outcome = await m.beginRun('borrower');
    expect(outcome.failure).toMatchObject({ code: 'E_LIMIT_MISMATCH', step: { kind: 'raiseLimit', container: 'borrower' } });
    expect(m.limitOf('borrower')).toBe(cap);
    expect(m.limitOf('lender')).toBe(300 * MiB);
    expect(m.loanTable()).toEqual([]);
  });

  it('rollback: a manager closed mid-plan stops dead, nothing is undone', async () => {
    const m = await h.open();
    const { lender } = await lenderAndBorrower(m);
    void m.invoke('lender').catch(() => undefined);
    await until(() => lender.started === 1, 2000, 'lender runs');
    await m.idle();
    h.writer.fault = () => {
      void m.crash();
      return undefined;
    };
    await expect(m.beginRun('borrower')).rejects.toMatchObject({ code: 'E_CLOSED' });
    expect(h.writer.log).toEqual([['lender', 300 * MiB - NEED]]);
  });
});

describe('snapshot: usage from the cgroup while no mount reports', () => {
  it('reads rss + shmem from memory.stat; an unreadable cgroup leaves the last reading', async () => {
    const m = await h.open();
    const dir = await h.cgroup('c', 24 * MiB);
    await h.add(m, 'c', 100 * MiB, LENDER, { cgroupPath: dir });
    await h.add(m, 'gone', 100 * MiB, LENDER, { cgroupPath: `${dir}-missing` });
    const snap = await m.snapshot();
    expect(snap.containers.find((c) => c.id === 'c')).toMatchObject({ usageBytes: 24 * MiB, storeMemoryBytes: 0 });
    expect(snap.containers.find((c) => c.id === 'gone')).toMatchObject({ usageBytes: 0 });
    expect(m.status()).toMatchObject({ tenant: 'acme', pid: process.pid, mounts: 0, plans: { executed: 0 } });
    expect(m.endpoint).toBeUndefined();
  });
});
