import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyPlan,
  applyStep,
  classifyContainer,
  DEFAULT_POLICY_CONFIG as config,
  MiB,
  parsePolicyConfig,
  planOnDrain,
  planOnStart,
  planRetryReturns,
  planSafeguard,
  poolScopeKey,
  scaledDemand,
  undoSteps,
  type ContainerState,
  type LendingPlan,
  type TenantSnapshot,
} from '../../policy';

function container(id: string, fields: Partial<ContainerState> & { limitMb: number; U: number; F: number }): ContainerState {
  const { limitMb, U, F, ...rest } = fields;
  return {
    id,
    tenant: 't1',
    function: id,
    workflow: 'w1',
    limitBytes: limitMb * MiB,
    initialLimitBytes: limitMb * MiB,
    profile: { peakMemoryBytes: U * MiB, largestFileBytes: F * MiB },
    running: false,
    usageBytes: 10 * MiB,
    storeMemoryBytes: 0,
    ...rest,
  };
}

function set(snapshot: TenantSnapshot, id: string, fields: Partial<ContainerState>): TenantSnapshot {
  return { ...snapshot, containers: snapshot.containers.map((c) => (c.id === id ? { ...c, ...fields } : c)) };
}

const limitOf = (s: TenantSnapshot, id: string) => s.containers.find((c) => c.id === id)!.limitBytes;

describe('the mix: CPU 300 MB (U 4, F 0) with IO 150 MB (U 2, F 256)', () => {
  const base: TenantSnapshot = {
    nowMs: 0,
    loans: [],
    containers: [container('cpu', { limitMb: 300, U: 4, F: 0 }), container('io', { limitMb: 150, U: 2, F: 256 })],
  };

  it('classifies CPU as harvest and IO as allocation', () => {
    expect(classifyContainer(base.containers[0]!, 0, config)).toBe('harvest');
    expect(classifyContainer(base.containers[1]!, 0, config)).toBe('allocation');
  });

  it('lends about 133 MB while both run and returns it when the IO queue drains', () => {
    // CPU starts first: IO is not running, so nothing is lent.
    const cpuStarts = planOnStart(base, 'cpu', config);
    expect(cpuStarts.steps).toEqual([]);
    let s = set(base, 'cpu', { running: true });

    const ioStarts = planOnStart(s, 'io', config);
    expect(ioStarts.opened).toHaveLength(1);
    const loan = ioStarts.opened[0]!;
    expect(loan).toMatchObject({ lender: 'cpu', borrower: 'io' });
    // need = 1.1·2 + 1.1·256 − 150 = 133.8 MB (the original truncated each term to 133).
    expect(loan.bytes / MiB).toBeGreaterThan(133);
    expect(loan.bytes / MiB).toBeLessThan(134);
    expect(ioStarts.steps.map((st) => `${st.kind}:${st.container}`)).toEqual(['evict:cpu', 'lowerLimit:cpu', 'raiseLimit:io']);

    s = applyPlan(set(s, 'io', { running: true }), ioStarts);
    expect(limitOf(s, 'io') / MiB).toBeCloseTo(283.8, 0);
    expect(limitOf(s, 'cpu') / MiB).toBeCloseTo(166.2, 0);
    expect(limitOf(s, 'io')).toBeGreaterThanOrEqual(scaledDemand(s.containers[1]!, config));

    // The IO container filled its memory tier with its two files; they can move to disk.
    s = set(s, 'io', { usageBytes: 270 * MiB, storeMemoryBytes: 256 * MiB });
    const ioDrains = planOnDrain(set(s, 'io', { running: false }), 'io', config);
    expect(ioDrains.steps.map((st) => `${st.kind}:${st.container}`)).toEqual(['evict:io', 'lowerLimit:io', 'raiseLimit:cpu']);
    expect(ioDrains.pendingReturns).toEqual([]);
    expect(ioDrains.returned).toEqual([{ lender: 'cpu', borrower: 'io', bytes: loan.bytes }]);
    s = applyPlan(s, ioDrains);
    expect(s.loans).toEqual([]);
    expect(limitOf(s, 'io')).toBe(150 * MiB);
    expect(limitOf(s, 'cpu')).toBe(300 * MiB);
  });

  it('with sharing off, nothing is lent', () => {
    const off = parsePolicyConfig({ pools: { sharing: false } });
    const s = set(base, 'cpu', { running: true });
    expect(planOnStart(s, 'io', off).steps).toEqual([]);
  });

  it('a borrower whose own memory blocks the return gives back part, then the rest on retry, else alarms', () => {
    let s = set(base, 'cpu', { running: true });
    s = applyPlan(set(s, 'io', { running: true }), planOnStart(s, 'io', config));
    const lent = s.loans[0]!.bytes;
    // 200 MB of the IO container's own memory: its limit cannot go back to 150 MB yet.
    s = set(s, 'io', { running: false, usageBytes: 200 * MiB, storeMemoryBytes: 0 });
    const drain = planOnDrain(s, 'io', config);
    expect(drain.returned[0]!.bytes).toBeGreaterThan(0);
    expect(drain.returned[0]!.bytes).toBeLessThan(lent);
    expect(drain.pendingReturns).toEqual([
      { lender: 'cpu', borrower: 'io', outstandingBytes: lent - drain.returned[0]!.bytes, attempts: 1, action: 'retry' },
    ]);
    s = applyPlan(s, drain);
    expect(limitOf(s, 'io')).toBeGreaterThanOrEqual(200 * MiB);

    // Still blocked: the attempts run out and the plan asks for an alarm.
    let retry: LendingPlan = planRetryReturns(s, config);
    expect(retry.pendingReturns[0]!.action).toBe('retry');
    s = applyPlan(s, retry);
    retry = planRetryReturns(s, config);
    expect(retry.pendingReturns[0]).toMatchObject({ attempts: 3, action: 'alarm' });
    s = applyPlan(s, retry);

    // The memory goes away: the retry returns everything.
    s = set(s, 'io', { usageBytes: 5 * MiB });
    s = applyPlan(s, planRetryReturns(s, config));
    expect(s.loans).toEqual([]);
    expect(limitOf(s, 'io')).toBe(150 * MiB);
    expect(limitOf(s, 'cpu')).toBe(300 * MiB);
  });

  it('a memory alarm on the lender takes its loan back first, then borrows from the largest spare, and cools down', () => {
    const extra = container('cpu2', { limitMb: 500, U: 4, F: 0 });
    let s: TenantSnapshot = { ...base, containers: [...base.containers, extra] };
    s = set(set(s, 'cpu', { running: true }), 'io', { running: true });
    s = applyPlan(s, planOnStart(s, 'io', config));
    const lentByCpu = s.loans.filter((l) => l.lender === 'cpu').reduce((a, l) => a + l.bytes, 0);
    expect(lentByCpu).toBeGreaterThan(0);
    s = set(s, 'io', { usageBytes: 100 * MiB, storeMemoryBytes: 90 * MiB });

    const decision = planSafeguard({ ...s, nowMs: 1000 }, { container: 'cpu', shortfallBytes: lentByCpu + 50 * MiB }, config);
    expect(decision.plan.returned).toEqual([{ lender: 'cpu', borrower: 'io', bytes: lentByCpu }]);
    expect(decision.plan.opened).toEqual([{ lender: 'cpu2', borrower: 'cpu', bytes: 50 * MiB }]);
    expect(decision.uncoveredBytes).toBe(0);
    expect(decision.nonHarvestableUntilMs).toBe(1000 + config.safeguard.coolDownMs);
    s = applyPlan(s, decision.plan);
    expect(limitOf(s, 'cpu')).toBe(350 * MiB);

    const cooling = set(s, 'cpu', { nonHarvestableUntilMs: decision.nonHarvestableUntilMs });
    expect(classifyContainer(cooling.containers[0]!, 2000, config)).toBe('self-sufficient');
    expect(classifyContainer(cooling.containers[0]!, decision.nonHarvestableUntilMs, config)).toBe('harvest');
  });
});

describe('safeguard: an OOM-paused container that lent nothing', () => {
  it('gets the paused grant, max(16 MiB, 25 % of its limit), as an emergency loan, its raise first', () => {
    const s: TenantSnapshot = {
      nowMs: 0,
      loans: [],
      containers: [container('cpu', { limitMb: 300, U: 4, F: 0 }), container('io', { limitMb: 150, U: 2, F: 256 }), container('cpu2', { limitMb: 500, U: 4, F: 0 })],
    };
    // io (150 MB) has no loans out: a shortfall of 0 alone would give it nothing.
    expect(planSafeguard(s, { container: 'io', shortfallBytes: 0 }, config).plan.opened).toEqual([]);
    const d = planSafeguard(s, { container: 'io', shortfallBytes: 0, oomPaused: true }, config);
    const granted = d.plan.opened.reduce((a, l) => a + l.bytes, 0);
    expect(granted).toBe(Math.ceil((0.25 * 150 * MiB) / 4096) * 4096);
    expect(d.plan.opened[0]!.lender).toBe('cpu2'); // the largest spare
    expect(d.plan.steps[0]).toMatchObject({ kind: 'raiseLimit', container: 'io' });
    expect(d.uncoveredBytes).toBe(0);
    // A larger stated shortfall wins over the grant; the floor holds for small containers.
    const big = planSafeguard(s, { container: 'io', shortfallBytes: 100 * MiB, oomPaused: true }, config);
    expect(big.plan.opened.reduce((a, l) => a + l.bytes, 0)).toBe(100 * MiB);
    const cfg = parsePolicyConfig({ safeguard: { pausedGrantFraction: 0 } });
    const floor = planSafeguard(s, { container: 'io', shortfallBytes: 0, oomPaused: true }, cfg);
    expect(floor.plan.opened.reduce((a, l) => a + l.bytes, 0)).toBe(16 * MiB);
  });
});

describe('pool thresholds: scaled (thesis text) against raw (original code)', () => {
  it('a container whose demand is within 10 % of a threshold is classified differently', () => {
    // U + F = 95 MB against M = 100 MB: raw 95 is self-sufficient (90 ≤ 95 ≤ 100); scaled 104.5 > 100 is allocation.
    const c = container('x', { limitMb: 100, U: 45, F: 50 });
    expect(classifyContainer(c, 0, config)).toBe('allocation');
    expect(classifyContainer(c, 0, parsePolicyConfig({ pools: { poolCompare: 'raw' } }))).toBe('self-sufficient');
    // U + F = 85 MB: raw 85 < 90 harvests; scaled 93.5 is self-sufficient.
    const h = container('y', { limitMb: 100, U: 40, F: 45 });
    expect(classifyContainer(h, 0, config)).toBe('self-sufficient');
    expect(classifyContainer(h, 0, parsePolicyConfig({ pools: { poolCompare: 'raw' } }))).toBe('harvest');
  });

  it('an unprofiled container never lends or borrows', () => {
    expect(classifyContainer({ ...container('z', { limitMb: 100, U: 1, F: 1 }), profile: null }, 0, config)).toBe('self-sufficient');
  });
});

// ---------------------------------------------------------------------------------------------
// Properties over random nodes and event sequences.

type Event =
  | { kind: 'start'; pick: number }
  | { kind: 'drain'; pick: number }
  | { kind: 'alarm'; pick: number; shortfallMb: number }
  | { kind: 'usage'; pick: number; nativeFrac: number; storeFrac: number };

const containerArb = fc.record({
  tenant: fc.constantFrom('t1', 't2'),
  function: fc.constantFrom('f', 'g'),
  workflow: fc.constantFrom('w', 'v'),
  limitMb: fc.integer({ min: 32, max: 1024 }),
  profile: fc.option(fc.record({ U: fc.integer({ min: 0, max: 600 }), F: fc.integer({ min: 0, max: 600 }) }), { freq: 8 }),
  nativeFrac: fc.double({ min: 0, max: 0.5, noNaN: true }),
  storeFrac: fc.double({ min: 0, max: 0.4, noNaN: true }),
});

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 4, arbitrary: fc.nat(100).map((pick) => ({ kind: 'start' as const, pick })) },
  { weight: 3, arbitrary: fc.nat(100).map((pick) => ({ kind: 'drain' as const, pick })) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('alarm' as const), pick: fc.nat(100), shortfallMb: fc.integer({ min: 0, max: 300 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('usage' as const),
      pick: fc.nat(100),
      nativeFrac: fc.double({ min: 0, max: 0.9, noNaN: true }),
      storeFrac: fc.double({ min: 0, max: 0.5, noNaN: true }),
    }),
  },
);

const configArb = fc.record({
  scope: fc.constantFrom('tenant', 'function', 'workflow'),
  poolCompare: fc.constantFrom('scaled', 'raw'),
}).map(({ scope, poolCompare }) => parsePolicyConfig({ pools: { scope, poolCompare } }));

type ContainerSpec = typeof containerArb extends fc.Arbitrary<infer T> ? T : never;

function initialSnapshot(specs: ContainerSpec[]): TenantSnapshot {
  return {
    nowMs: 0,
    loans: [],
    containers: specs.map((s, i) => {
      const limit = s.limitMb * MiB;
      const store = Math.floor(s.storeFrac * limit);
      return {
        id: `c${i}`,
        tenant: s.tenant,
        function: s.function,
        workflow: s.workflow,
        limitBytes: limit,
        initialLimitBytes: limit,
        profile: s.profile ? { peakMemoryBytes: s.profile.U * MiB, largestFileBytes: s.profile.F * MiB } : null,
        running: false,
        usageBytes: Math.floor(s.nativeFrac * limit) + store,
        storeMemoryBytes: store,
      };
    }),
  };
}

const sumLimits = (s: TenantSnapshot) => s.containers.reduce((a, c) => a + c.limitBytes, 0);

/** Checks every invariant of one plan against the state it was made from; returns the state after it. */
function checkPlan(before: TenantSnapshot, plan: LendingPlan, cfg: typeof config): TenantSnapshot {
  // Every prefix of the plan can be rolled back, and the rollback is itself safe on cgroup v1.
  for (let k = 0; k <= plan.steps.length; k++) {
    const prefix = plan.steps.slice(0, k);
    const partial = prefix.reduce(applyStep, before);
    const rolledBack = undoSteps(prefix, cfg).reduce(applyStep, partial);
    expect(rolledBack.containers.map((c) => c.limitBytes)).toEqual(before.containers.map((c) => c.limitBytes));
  }
  // applyStep throws E_UNSAFE_STEP on a limit below usage or a stale `from`.
  const after = applyPlan(before, plan);
  const byId = new Map(after.containers.map((c) => [c.id, c]));
  for (const c of after.containers) expect(c.limitBytes).toBeGreaterThanOrEqual(0);
  expect(sumLimits(after)).toBe(sumLimits(before));
  for (const loan of after.loans) {
    const lender = byId.get(loan.lender)!;
    const borrower = byId.get(loan.borrower)!;
    expect(lender.tenant).toBe(borrower.tenant);
    expect(poolScopeKey(lender, cfg)).toBe(poolScopeKey(borrower, cfg));
    expect(loan.bytes).toBeGreaterThan(0);
  }
  // A lender never gives more than its spare: after lending, its limit still covers U' + F'.
  for (const opened of plan.opened) {
    const lender = byId.get(opened.lender)!;
    expect(lender.limitBytes).toBeGreaterThanOrEqual(scaledDemand(lender, cfg));
  }
  // Limits are exactly the initial limit moved by the loan table.
  for (const c of after.containers) {
    const out = after.loans.filter((l) => l.lender === c.id).reduce((a, l) => a + l.bytes, 0);
    const inn = after.loans.filter((l) => l.borrower === c.id).reduce((a, l) => a + l.bytes, 0);
    expect(c.limitBytes).toBe(c.initialLimitBytes - out + inn);
  }
  return after;
}

describe('lending properties', () => {
  it('plans are safe, conserve limits, stay in scope, respect spare, roll back from any prefix, and return every loan', () => {
    fc.assert(
      fc.property(
        fc.array(containerArb, { minLength: 1, maxLength: 7 }),
        fc.array(eventArb, { minLength: 1, maxLength: 40 }),
        configArb,
        (specs, events, cfg) => {
          let s = initialSnapshot(specs);
          const n = s.containers.length;
          for (const e of events) {
            const c = s.containers[e.pick % n]!;
            if (e.kind === 'start') {
              if (c.running) continue;
              s = checkPlan(s, planOnStart(s, c.id, cfg), cfg);
              s = set(s, c.id, { running: true });
            } else if (e.kind === 'drain') {
              if (!c.running) continue;
              s = set(s, c.id, { running: false });
              s = checkPlan(s, planOnDrain(s, c.id, cfg), cfg);
            } else if (e.kind === 'alarm') {
              const d = planSafeguard(s, { container: c.id, shortfallBytes: e.shortfallMb * MiB }, cfg);
              s = checkPlan(s, d.plan, cfg);
              s = set(s, c.id, { nonHarvestableUntilMs: d.nonHarvestableUntilMs });
            } else {
              // The function's own memory and its memory tier change; usage stays under the limit.
              const store = Math.floor(e.storeFrac * c.limitBytes);
              const native = Math.floor(e.nativeFrac * (c.limitBytes - store));
              s = set(s, c.id, { usageBytes: native + store, storeMemoryBytes: store });
            }
            s = checkPlan(s, planRetryReturns(s, cfg), cfg);
          }
          // Every queue drains; the functions' own memory is freed; retries return what was blocked.
          for (const c of s.containers) {
            s = set(s, c.id, { running: false });
            s = checkPlan(s, planOnDrain(s, c.id, cfg), cfg);
          }
          for (const c of s.containers) s = set(s, c.id, { usageBytes: c.storeMemoryBytes });
          s = checkPlan(s, planRetryReturns(s, cfg), cfg);
          expect(s.loans).toEqual([]);
          for (const c of s.containers) expect(c.limitBytes).toBe(c.initialLimitBytes);
        },
      ),
      { seed: 1113, numRuns: 150 },
    );
  });

  it('some generated sequences really lend (the property above is not vacuous)', () => {
    let lentSomething = 0;
    fc.assert(
      fc.property(fc.array(containerArb, { minLength: 2, maxLength: 6 }), (specs) => {
        let s = initialSnapshot(specs);
        for (const c of s.containers) {
          const plan = planOnStart(s, c.id, config);
          if (plan.opened.length > 0) lentSomething++;
          s = set(applyPlan(s, plan), c.id, { running: true });
        }
      }),
      { seed: 7, numRuns: 100 },
    );
    expect(lentSomething).toBeGreaterThan(10);
  });
});
