import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  adaptStore,
  decidePlacement,
  diskWorkingSetBytes,
  DEFAULT_POLICY_CONFIG as config,
  headroomBytes,
  MiB,
  planEviction,
  planPromotion,
  parsePolicyConfig,
  workingSetExcessBytes,
  type InodeStat,
} from '../../policy';

const W = config.eviction.antiThrashWindowMs;

function inode(ino: number, fields: Partial<InodeStat>): InodeStat {
  return { ino, tier: 'memory', sizeBytes: MiB, openCount: 0, lastOpenMs: 0, lastCloseMs: 0, lastMoveMs: null, ...fields };
}

describe('placement', () => {
  it('memory when 1.1 × hint fits in what the budget has left, disk otherwise, unknown sizes per config', () => {
    const req = { budgetBytes: 100 * MiB, memoryTierBytes: 45 * MiB };
    expect(decidePlacement({ ...req, sizeHintBytes: 50 * MiB }, config)).toEqual({ tier: 'memory', reason: 'fits-in-budget' });
    // 1.1 × 51 MiB = 56.1 MiB > 55 MiB left.
    expect(decidePlacement({ ...req, sizeHintBytes: 51 * MiB }, config)).toEqual({ tier: 'disk', reason: 'exceeds-budget' });
    expect(decidePlacement({ ...req, sizeHintBytes: null }, config).tier).toBe('disk');
  });

  // bench impact, 2 × 128 MiB at 150 MiB: budget 141 MiB, file 1 in memory, file 2 on disk in use.
  const WS = config.placement.workingSetWindowMs;
  const now = 1_000_000;
  const file1Memory = inode(1, { sizeBytes: 128 * MiB, lastOpenMs: now - 5_000, lastCloseMs: now - 4_000 });
  const file2Open = inode(2, { tier: 'disk', sizeBytes: 128 * MiB, openCount: 1, lastOpenMs: now - 1_000 });
  const file2Closed = { ...file2Open, openCount: 0, lastCloseMs: now - 500 };
  const file2Cold = { ...file2Open, openCount: 0, lastOpenMs: now - WS - 2, lastCloseMs: now - WS - 1 };

  it.each([
    // [case, hint MiB, memory tier MiB, disk working set MiB, budget MiB, tier]
    ['nothing in use', 50, 0, 0, 100, 'memory'],
    ['beside the working set', 50, 0, 45, 100, 'memory'],
    ['the working set would be starved', 50, 0, 46, 100, 'disk'],
    ['memory tier and working set together', 40, 30, 30, 100, 'disk'],
    ['no working set given (fixed budget)', 50, 45, undefined, 100, 'memory'],
  ] as const)('placement with the disk working set: %s', (_case, hint, memory, ws, budget, tier) => {
    const request = { sizeHintBytes: hint * MiB, memoryTierBytes: memory * MiB, budgetBytes: budget * MiB, ...(ws === undefined ? {} : { diskWorkingSetBytes: ws * MiB }) };
    expect(decidePlacement(request, config).tier).toBe(tier);
  });

  it.each([
    // [case, inodes, except, working set MiB]
    ['an open disk file', [file1Memory, file2Open], undefined, 128],
    ['a disk file closed within the window', [file1Memory, file2Closed], undefined, 128],
    ['a disk file idle past the window', [file1Memory, file2Cold], undefined, 0],
    ['the promotion candidate left out', [file2Closed], 2, 0],
    ['memory-tier files never', [file1Memory], undefined, 0],
  ] as const)('disk working set: %s', (_case, inodes, except, mib) => {
    expect(diskWorkingSetBytes({ nowMs: now, inodes: [...inodes] }, config, except)).toBe(mib * MiB);
  });

  it('the window 0 leaves open disk files only in the working set', () => {
    const openOnly = parsePolicyConfig({ placement: { workingSetWindowMs: 0 } });
    expect(diskWorkingSetBytes({ nowMs: now, inodes: [file2Open] }, openOnly)).toBe(128 * MiB);
    expect(diskWorkingSetBytes({ nowMs: now, inodes: [file2Closed] }, openOnly)).toBe(0);
    expect(workingSetExcessBytes({ nowMs: now, inodes: [file1Memory, file2Closed] }, 141 * MiB, openOnly)).toBe(0);
  });

  it.each([
    // [case, inodes, budget MiB, excess MiB]
    ['a pinned file starving the open one gives way', [file1Memory, file2Open], 141, 115],
    ['both fit', [inode(1, { sizeBytes: 60 * MiB }), inode(2, { tier: 'disk', sizeBytes: 50 * MiB, openCount: 1 })], 120, 0],
    ['a part', [inode(1, { sizeBytes: 60 * MiB }), inode(2, { tier: 'disk', sizeBytes: 70 * MiB, openCount: 1 })], 120, 10],
    ['a cold disk tier asks nothing', [file1Memory, file2Cold], 141, 0],
    ['nothing in memory, nothing to give', [file2Open], 141, 0],
  ] as const)('spill for the working set: %s', (_case, inodes, budget, mib) => {
    expect(workingSetExcessBytes({ nowMs: now, inodes: [...inodes] }, budget * MiB, config)).toBe(mib * MiB);
  });

  it.each([
    // [case, inodes, shared budget MiB or none, promoted]
    ['room alone would promote file 2 beside file 1, used on disk a moment ago', [{ ...file1Memory, tier: 'disk' as const }, { ...file2Closed, lastCloseMs: now - 3_000 }], undefined, [2]],
    ['the shared budget keeps file 1 its page cache', [{ ...file1Memory, tier: 'disk' as const }, { ...file2Closed, lastCloseMs: now - 3_000 }], 141, []],
    ['a cold neighbour asks nothing', [{ ...file1Memory, tier: 'disk' as const, lastCloseMs: now - WS - 1, lastOpenMs: now - WS - 2 }, { ...file2Closed, lastCloseMs: now - 3_000 }], 141, [2]],
    ['both fit the budget: both come back', [inode(1, { tier: 'disk', sizeBytes: 60 * MiB }), inode(2, { tier: 'disk', sizeBytes: 60 * MiB, lastCloseMs: now - 5_000 })], 141, [2, 1]],
  ] as const)('promotion with a shared budget: %s', (_case, inodes, shared, promoted) => {
    const cfg = parsePolicyConfig({ eviction: { promoteClosed: true } });
    const options = shared === undefined ? {} : { sharedBudgetBytes: shared * MiB };
    expect(planPromotion({ nowMs: now, inodes: [...inodes] }, 141 * MiB, cfg, options).promotions).toEqual(promoted);
  });

  it('headroom is max(8 MiB, 5 %)', () => {
    expect(headroomBytes(100 * MiB, config)).toBe(8 * MiB);
    expect(headroomBytes(1000 * MiB, config)).toBe(50 * MiB);
  });
});

describe('eviction', () => {
  it('takes closed before open, oldest close first, and skips inodes moved within the window', () => {
    const now = 100_000;
    const inodes = [
      inode(1, { openCount: 1, lastOpenMs: 10 }),
      inode(2, { lastCloseMs: 500 }),
      inode(3, { lastCloseMs: 100 }),
      inode(4, { lastCloseMs: 50, lastMoveMs: now - 1 }), // just promoted: protected
      inode(5, { tier: 'disk', lastCloseMs: 1 }),
    ];
    expect(planEviction({ nowMs: now, inodes }, 2 * MiB, config).victims).toEqual([3, 2]);
    expect(planEviction({ nowMs: now, inodes }, 3 * MiB, config)).toEqual({ victims: [3, 2, 1], freedBytes: 3 * MiB, shortfallBytes: 0 });
    expect(planEviction({ nowMs: now, inodes }, 5 * MiB, config)).toMatchObject({ victims: [3, 2, 1], shortfallBytes: 2 * MiB });
    expect(planEviction({ nowMs: now, inodes }, 4 * MiB, config, { urgent: true }).victims).toEqual([3, 2, 4, 1]);
  });

  it('promotes open disk inodes, most recently opened first, first-fit in the room, never within the window', () => {
    const now = 100_000;
    const inodes = [
      inode(1, { tier: 'disk', openCount: 1, lastOpenMs: 10, sizeBytes: 3 * MiB }),
      inode(2, { tier: 'disk', openCount: 1, lastOpenMs: 20, sizeBytes: 5 * MiB }),
      inode(3, { tier: 'disk', openCount: 1, lastOpenMs: 30, sizeBytes: 1 * MiB, lastMoveMs: now - 5 }),
      inode(4, { tier: 'disk', openCount: 0, lastCloseMs: 40, sizeBytes: 1 * MiB }),
    ];
    expect(planPromotion({ nowMs: now, inodes }, 4 * MiB, config)).toEqual({ promotions: [1], bytes: 3 * MiB });
    expect(planPromotion({ nowMs: now, inodes }, 9 * MiB, config).promotions).toEqual([2, 1]);
  });

  it('promotes closed files only once the store has been quiet (no open or close) for promoteQuietMs', () => {
    const cfg = parsePolicyConfig({ eviction: { promoteClosed: true } });
    const now = 100_000;
    const closed = inode(1, { tier: 'disk', openCount: 0, lastOpenMs: 10, lastCloseMs: 20, sizeBytes: 1 * MiB });
    expect(planPromotion({ nowMs: now, inodes: [closed] }, 4 * MiB, cfg).promotions).toEqual([1]);
    // Another file was just closed (a function writing file after file): wait.
    const justClosed = inode(2, { tier: 'memory', openCount: 0, lastOpenMs: now - 300, lastCloseMs: now - 200 });
    expect(planPromotion({ nowMs: now, inodes: [closed, justClosed] }, 4 * MiB, cfg).promotions).toEqual([]);
    // …or just opened: wait too.
    const justOpened = inode(3, { tier: 'disk', openCount: 1, lastOpenMs: now - 10, sizeBytes: 8 * MiB });
    expect(planPromotion({ nowMs: now, inodes: [closed, justOpened] }, 4 * MiB, cfg).promotions).toEqual([]);
    // Quiet for the window: it comes back.
    expect(planPromotion({ nowMs: now + 1000, inodes: [closed, justClosed] }, 4 * MiB, cfg).promotions).toEqual([1]);
  });

  it('the adapter evicts the excess over limit − headroom and otherwise promotes into the room', () => {
    const inodes = [inode(1, { sizeBytes: 20 * MiB }), inode(2, { tier: 'disk', openCount: 1, sizeBytes: 10 * MiB })];
    const over = adaptStore({ nowMs: 1e6, limitBytes: 100 * MiB, usageBytes: 95 * MiB, inodes }, config);
    expect(over).toMatchObject({ action: 'evict', bytesToFree: 3 * MiB, plan: { victims: [1] } });
    const under = adaptStore({ nowMs: 1e6, limitBytes: 100 * MiB, usageBytes: 50 * MiB, inodes }, config);
    expect(under).toMatchObject({ action: 'promote', roomBytes: 42 * MiB, plan: { promotions: [2] } });
    expect(adaptStore({ nowMs: 1e6, limitBytes: 100 * MiB, usageBytes: 85 * MiB, inodes }, config).action).toBe('none');
  });

  it('never picks an open inode while closed ones would do, nor a recently moved one unless urgent', () => {
    const inodeArb = fc.record({
      tier: fc.constantFrom<'memory' | 'disk'>('memory', 'memory', 'disk'),
      sizeBytes: fc.integer({ min: 0, max: 64 }).map((x) => x * 4096),
      openCount: fc.constantFrom(0, 0, 1, 2),
      lastOpenMs: fc.option(fc.integer({ min: 0, max: 10_000 })),
      lastCloseMs: fc.option(fc.integer({ min: 0, max: 10_000 })),
      lastMoveMs: fc.option(fc.integer({ min: 0, max: 10_000 })),
    });
    fc.assert(
      fc.property(
        fc.array(inodeArb, { maxLength: 30 }),
        fc.integer({ min: 0, max: 64 * 4096 * 10 }),
        fc.boolean(),
        (raw, bytesToFree, urgent) => {
          const nowMs = 10_000 + W / 2;
          const inodes = raw.map((r, i) => ({ ino: i + 1, ...r }));
          const plan = planEviction({ nowMs, inodes }, bytesToFree, config, { urgent });
          const byIno = new Map(inodes.map((i) => [i.ino, i]));
          const victims = plan.victims.map((v) => byIno.get(v)!);
          const recent = (i: InodeStat) => i.lastMoveMs !== null && nowMs - i.lastMoveMs < W;
          const eligible = inodes.filter((i) => i.tier === 'memory' && i.sizeBytes > 0 && (urgent || !recent(i)));
          expect(new Set(plan.victims).size).toBe(plan.victims.length);
          for (const v of victims) {
            expect(v.tier).toBe('memory');
            if (!urgent) expect(recent(v)).toBe(false);
          }
          const closedBytes = eligible.filter((i) => i.openCount === 0).reduce((a, i) => a + i.sizeBytes, 0);
          if (victims.some((v) => v.openCount > 0)) {
            expect(closedBytes).toBeLessThan(bytesToFree);
            expect(victims.filter((v) => v.openCount === 0)).toHaveLength(eligible.filter((i) => i.openCount === 0).length);
          }
          // Closed victims come before open ones.
          const firstOpen = victims.findIndex((v) => v.openCount > 0);
          if (firstOpen >= 0) expect(victims.slice(firstOpen).every((v) => v.openCount > 0)).toBe(true);
          const total = eligible.reduce((a, i) => a + i.sizeBytes, 0);
          expect(plan.freedBytes).toBe(victims.reduce((a, v) => a + v.sizeBytes, 0));
          expect(plan.shortfallBytes).toBe(Math.max(0, bytesToFree - plan.freedBytes));
          if (total >= bytesToFree) expect(plan.freedBytes).toBeGreaterThanOrEqual(bytesToFree);
        },
      ),
      { seed: 4242, numRuns: 500 },
    );
  });
});
