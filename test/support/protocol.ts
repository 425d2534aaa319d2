// The native core's safety nets, checked when a mount test ends: a request answered by the Reply
// destructor (unanswered), a C++ exception caught at dispatch, a reply whose size broke the opcode
// table's layout. Each answers EIO and keeps serving, so a test's own checks can pass while one
// fired: every mount test asserts at teardown that they stayed 0.
import { expect } from 'vitest';
import type { EphemeraMount } from '../../fusefs/mount';

export interface ProtocolCounters {
  unanswered: number;
  exceptions: number;
  badReplies: number;
}

/** What a suite that provokes a safety net on purpose expects of it (the rest must stay 0). */
export type ProvokedCounters = Partial<ProtocolCounters>;

const NAMES = ['unanswered', 'exceptions', 'badReplies'] as const;

/** The three counters out of `mount.counters()` or the `stopped` event `ephemera mount --json` prints. */
export function protocolCounters(source: Partial<Record<(typeof NAMES)[number], unknown>>): ProtocolCounters {
  const out = {} as ProtocolCounters;
  for (const n of NAMES) {
    const v = source[n];
    if (typeof v !== 'number') throw new Error(`protocol counter ${n} missing from ${JSON.stringify(source)} (an older ephemera mount?)`);
    out[n] = v;
  }
  return out;
}

/** Asserts the counters are 0, or exactly what the suite says it provoked. */
export function expectCleanProtocol(counters: ProtocolCounters, what: string, provoked: ProvokedCounters = {}): void {
  const want: ProtocolCounters = { unanswered: 0, exceptions: 0, badReplies: 0, ...provoked };
  expect(counters, `${what}: the native core's unanswered / exceptions / bad-replies counters at teardown`).toEqual(want);
}

/**
 * Unmounts in-process mounts and reads their protocol counters after the unmount (everything
 * served). Every mount is closed before anything is asserted; the returned `assert` is called at
 * the end of the teardown hook, so a non-zero counter fails the test without skipping the cleanup
 * that follows the unmount (cgroups, tmpfs, directories).
 */
export async function closeMountsChecked(mounts: Iterable<EphemeraMount | undefined>, provoked: ProvokedCounters = {}): Promise<{ assert(): void }> {
  const seen: Array<[string, ProtocolCounters]> = [];
  for (const m of mounts) {
    if (!m) continue;
    const before = m.counters();
    await m.close();
    let after = before;
    try {
      after = m.counters();
    } catch {
      /* the session let go of its store: the counts read before the unmount stand */
    }
    seen.push([m.mountpoint, protocolCounters(after)]);
  }
  return {
    assert() {
      for (const [mountpoint, c] of seen) expectCleanProtocol(c, mountpoint, provoked);
    },
  };
}

/** One mount, asserted at once (for a hook with nothing after it). */
export async function closeMountChecked(m: EphemeraMount | undefined, provoked: ProvokedCounters = {}): Promise<void> {
  (await closeMountsChecked([m], provoked)).assert();
}
