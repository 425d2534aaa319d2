import type { PolicyConfig } from './config';
import { LendingWorkspace, type LendingPlan } from './lending';
import type { TenantSnapshot } from './snapshots';

/** A memory alarm raised by a container's memory adapter (eviction cannot keep up). */
export interface MemoryAlarm {
  readonly container: string;
  /** Bytes the container needs beyond its current limit to stay clear of OOM; 0 = only take back what it lent. */
  readonly shortfallBytes: number;
  /** Its task is stalled at the limit with the OOM killer paused: it needs room now, however much it said. */
  readonly oomPaused?: boolean;
}

/** What an alarm asks for: its own shortfall, or for an OOM-paused container at least the paused grant. */
export function alarmNeedBytes(alarm: MemoryAlarm, limitBytes: number, config: PolicyConfig): number {
  if (!alarm.oomPaused) return alarm.shortfallBytes;
  const grant = Math.max(config.safeguard.pausedGrantMinBytes, Math.ceil(config.safeguard.pausedGrantFraction * limitBytes));
  return Math.max(alarm.shortfallBytes, grant);
}

export interface SafeguardDecision {
  readonly plan: LendingPlan;
  /** The manager records this on the container: it is not harvested before then. */
  readonly nonHarvestableUntilMs: number;
  /** What the plan could not cover; > 0 means the container may still hit OOM. */
  readonly uncoveredBytes: number;
}

/**
 * Answers a memory alarm from container C. First every loan C has out comes back (borrowers may be
 * blocked in part: those become pending returns). If C is still short, it gets emergency loans from
 * the largest spares of its scope, running or not: the thesis only lends between running containers,
 * but an alarm is exactly when waiting for a peer to start is too late. C then may not lend for the
 * cool-down, so it is not harvested straight back into trouble.
 */
export function planSafeguard(snapshot: TenantSnapshot, alarm: MemoryAlarm, config: PolicyConfig): SafeguardDecision {
  const ws = new LendingWorkspace(snapshot, config);
  const c = ws.get(alarm.container);
  const limitBefore = c.limit;
  for (const loan of ws.loansOf(alarm.container).filter((l) => l.lender === alarm.container)) {
    ws.returnLoan(loan.lender, loan.borrower);
  }
  let remaining = ws.roundUp(alarmNeedBytes(alarm, limitBefore, config) - (c.limit - limitBefore));
  if (remaining > 0) {
    const donors = ws
      .all()
      .map((w) => w.container)
      .filter((d) => d.id !== alarm.container && d.profile !== null && ws.sameScope(d.id, alarm.container))
      .filter((d) => d.nonHarvestableUntilMs == null || snapshot.nowMs >= d.nonHarvestableUntilMs)
      .filter((d) => ws.lendable(d.id) > 0)
      .sort((a, b) => ws.spare(b.id) - ws.spare(a.id) || (a.id < b.id ? -1 : 1));
    for (const donor of donors) {
      if (remaining <= 0) break;
      const bytes = Math.min(remaining, ws.lendable(donor.id));
      ws.lend(donor.id, alarm.container, bytes);
      remaining -= bytes;
    }
  }
  // The alarmed container's raises go first. A raise is always safe on cgroup v1, and here time is
  // what matters: its task may be stalled at the limit (OOM killer paused, 1 s watchdog). The
  // lenders' evict → lower steps follow, so the node is overcommitted by the emergency loan only
  // for the few tens of milliseconds of those steps — an overcommit beats an OOM kill.
  const built = ws.plan('safeguard', alarm.container);
  const isOwnRaise = (s: LendingPlan['steps'][number]) => s.kind === 'raiseLimit' && s.container === alarm.container;
  const plan: LendingPlan = { ...built, steps: [...built.steps.filter(isOwnRaise), ...built.steps.filter((s) => !isOwnRaise(s))] };
  return {
    plan,
    nonHarvestableUntilMs: snapshot.nowMs + config.safeguard.coolDownMs,
    uncoveredBytes: Math.max(0, remaining),
  };
}
