import { headroomBytes, type PolicyConfig } from './config';
import { PolicyError } from './errors';
import { classifyContainer, poolScopeKey, spareBytes, type Pool } from './pools';
import type { ContainerState, Loan, TenantSnapshot } from './snapshots';

/**
 * One step of a lending plan. The executor runs steps in order and stops at the first failure; the
 * executed prefix can then be undone with `undoSteps`. Order matters on cgroup v1, where a limit cannot
 * go below usage (Docker answers 500): the giving side's store evicts, then its limit is lowered, and
 * only then is the receiving side's limit raised.
 */
export type LendingStep =
  /** Move memory-tier files of `container` to disk until its usage is at most `usageAtMostBytes` (no-op if it already is). */
  | { readonly kind: 'evict'; readonly container: string; readonly usageAtMostBytes: number }
  | { readonly kind: 'lowerLimit'; readonly container: string; readonly fromBytes: number; readonly toBytes: number }
  | { readonly kind: 'raiseLimit'; readonly container: string; readonly fromBytes: number; readonly toBytes: number };

/** A return the borrower's own (non-evictable) memory blocked, fully or in part. */
export interface PendingReturn {
  readonly lender: string;
  readonly borrower: string;
  readonly outstandingBytes: number;
  readonly attempts: number;
  /** `retry`: call `planRetryReturns` later; `alarm`: attempts are used up, raise a memory alarm on the borrower. */
  readonly action: 'retry' | 'alarm';
}

export type LendingTrigger = 'start' | 'drain' | 'safeguard' | 'retry';

export interface LendingPlan {
  readonly trigger: LendingTrigger;
  /** The container whose event produced the plan (null for a retry sweep). */
  readonly container: string | null;
  readonly steps: readonly LendingStep[];
  /** Bytes newly lent by this plan, one row per (lender, borrower). */
  readonly opened: readonly Loan[];
  /** Bytes given back by this plan, one row per (lender, borrower). */
  readonly returned: readonly Loan[];
  readonly pendingReturns: readonly PendingReturn[];
  /** The complete loan table once every step has run. */
  readonly loansAfter: readonly Loan[];
}

interface Working {
  readonly container: ContainerState;
  limit: number;
  usage: number;
  store: number;
}

/**
 * A private, mutable copy of the snapshot on which a plan is built step by step, so that later
 * decisions of one plan see the limits the earlier steps set.
 */
export class LendingWorkspace {
  private readonly byId = new Map<string, Working>();
  private readonly loans = new Map<string, { lender: string; borrower: string; bytes: number; returnAttempts: number }>();
  private readonly steps: LendingStep[] = [];
  private readonly opened = new Map<string, number>();
  private readonly returned = new Map<string, number>();
  private readonly pending: PendingReturn[] = [];

  constructor(
    readonly snapshot: TenantSnapshot,
    readonly config: PolicyConfig,
  ) {
    for (const c of snapshot.containers) {
      if (this.byId.has(c.id)) throw new PolicyError('E_BAD_SNAPSHOT', `duplicate container id ${c.id}`);
      this.byId.set(c.id, { container: c, limit: c.limitBytes, usage: c.usageBytes, store: c.storeMemoryBytes });
    }
    for (const loan of snapshot.loans) {
      this.get(loan.lender);
      this.get(loan.borrower);
      const key = loanKey(loan.lender, loan.borrower);
      const existing = this.loans.get(key);
      this.loans.set(key, {
        lender: loan.lender,
        borrower: loan.borrower,
        bytes: (existing?.bytes ?? 0) + loan.bytes,
        returnAttempts: Math.max(existing?.returnAttempts ?? 0, loan.returnAttempts ?? 0),
      });
    }
  }

  get(id: string): Working {
    const w = this.byId.get(id);
    if (!w) throw new PolicyError('E_BAD_SNAPSHOT', `unknown container ${id}`);
    return w;
  }

  all(): Working[] {
    return [...this.byId.values()];
  }

  pool(id: string): Pool {
    return classifyContainer(this.get(id).container, this.snapshot.nowMs, this.config);
  }

  sameScope(a: string, b: string): boolean {
    return poolScopeKey(this.get(a).container, this.config) === poolScopeKey(this.get(b).container, this.config);
  }

  /** Spare with the limits this plan has set so far. */
  spare(id: string): number {
    const w = this.get(id);
    return spareBytes({ ...w.container, limitBytes: w.limit }, this.config);
  }

  need(id: string): number {
    return -this.spare(id);
  }

  /** How far the limit can go down now: memory the store cannot evict, plus headroom, must stay under it. */
  lowerableBytes(id: string): number {
    const w = this.get(id);
    return Math.max(0, w.limit - minimumLimitFor(w.usage - w.store, this.config));
  }

  /** What `id` can lend now: never more than its spare, nor than its limit can be lowered. */
  lendable(id: string): number {
    return this.roundDown(Math.min(this.spare(id), this.lowerableBytes(id)));
  }

  roundDown(bytes: number): number {
    const g = this.config.lending.granularityBytes;
    return Math.max(0, Math.floor(bytes / g) * g);
  }

  roundUp(bytes: number): number {
    const g = this.config.lending.granularityBytes;
    return Math.max(0, Math.ceil(bytes / g) * g);
  }

  loansOf(id: string): { lender: string; borrower: string; bytes: number; returnAttempts: number }[] {
    return [...this.loans.values()]
      .filter((l) => l.lender === id || l.borrower === id)
      .sort((a, b) => cmp(a.lender, b.lender) || cmp(a.borrower, b.borrower));
  }

  pendingLoans(): { lender: string; borrower: string; bytes: number; returnAttempts: number }[] {
    return [...this.loans.values()]
      .filter((l) => l.returnAttempts > 0)
      .sort((a, b) => cmp(a.lender, b.lender) || cmp(a.borrower, b.borrower));
  }

  /** Moves `bytes` of limit from giver to taker as evict → lower → raise. */
  private shift(giver: Working, taker: Working, bytes: number): void {
    const newLimit = giver.limit - bytes;
    const usageTarget = newLimit - headroomBytes(newLimit, this.config);
    this.steps.push({ kind: 'evict', container: giver.container.id, usageAtMostBytes: usageTarget });
    if (giver.usage > usageTarget) {
      const freed = Math.min(giver.store, giver.usage - usageTarget);
      giver.usage -= freed;
      giver.store -= freed;
    }
    this.steps.push({ kind: 'lowerLimit', container: giver.container.id, fromBytes: giver.limit, toBytes: newLimit });
    giver.limit = newLimit;
    this.steps.push({ kind: 'raiseLimit', container: taker.container.id, fromBytes: taker.limit, toBytes: taker.limit + bytes });
    taker.limit += bytes;
  }

  lend(lender: string, borrower: string, bytes: number): void {
    if (bytes <= 0) return;
    this.shift(this.get(lender), this.get(borrower), bytes);
    const key = loanKey(lender, borrower);
    const loan = this.loans.get(key) ?? { lender, borrower, bytes: 0, returnAttempts: 0 };
    loan.bytes += bytes;
    this.loans.set(key, loan);
    this.opened.set(key, (this.opened.get(key) ?? 0) + bytes);
  }

  /**
   * Gives a loan back as far as the borrower's own memory allows. A blocked remainder stays on the
   * loan table, marked with one more attempt, and is reported as a pending return.
   */
  returnLoan(lender: string, borrower: string): void {
    const key = loanKey(lender, borrower);
    const loan = this.loans.get(key);
    if (!loan) return;
    const b = this.get(borrower);
    const possible = this.lowerableBytes(borrower);
    const giveBack = possible >= loan.bytes ? loan.bytes : this.roundDown(possible);
    if (giveBack > 0) {
      this.shift(b, this.get(lender), giveBack);
      this.returned.set(key, (this.returned.get(key) ?? 0) + giveBack);
    }
    loan.bytes -= giveBack;
    if (loan.bytes === 0) {
      this.loans.delete(key);
      return;
    }
    loan.returnAttempts += 1;
    this.pending.push({
      lender,
      borrower,
      outstandingBytes: loan.bytes,
      attempts: loan.returnAttempts,
      action: loan.returnAttempts >= this.config.lending.maxReturnAttempts ? 'alarm' : 'retry',
    });
  }

  plan(trigger: LendingTrigger, container: string | null): LendingPlan {
    const rows = (m: Map<string, number>): Loan[] =>
      [...m.entries()].map(([key, bytes]) => {
        const [lender, borrower] = JSON.parse(key) as [string, string];
        return { lender, borrower, bytes };
      });
    return {
      trigger,
      container,
      steps: [...this.steps],
      opened: rows(this.opened),
      returned: rows(this.returned),
      pendingReturns: [...this.pending],
      loansAfter: [...this.loans.values()].map((l) =>
        l.returnAttempts > 0
          ? { lender: l.lender, borrower: l.borrower, bytes: l.bytes, returnAttempts: l.returnAttempts }
          : { lender: l.lender, borrower: l.borrower, bytes: l.bytes },
      ),
    };
  }
}

function loanKey(lender: string, borrower: string): string {
  return JSON.stringify([lender, borrower]);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Smallest limit l with l − headroom(l) ≥ nonEvictable: a limit below it would starve or fail to apply. */
export function minimumLimitFor(nonEvictableBytes: number, config: PolicyConfig): number {
  const native = Math.max(0, nonEvictableBytes);
  let limit = Math.max(native + config.headroom.minBytes, Math.ceil((native + 1) / (1 - config.headroom.fraction)));
  while (limit - headroomBytes(limit, config) < native) limit += 1;
  return limit;
}

/**
 * A container starts running (thesis 4.3). A harvest container gives each running allocation container
 * of its scope its whole need, smallest need first, when that fits in what it can still lend; an
 * allocation container borrows from the running harvest containers of its scope, largest spare first,
 * until its need is met or their spares are spent. Self-sufficient containers produce an empty plan.
 */
export function planOnStart(snapshot: TenantSnapshot, containerId: string, config: PolicyConfig): LendingPlan {
  const ws = new LendingWorkspace(snapshot, config);
  const pool = ws.pool(containerId);
  const peers = ws
    .all()
    .map((w) => w.container)
    .filter((c) => c.id !== containerId && c.running && ws.sameScope(c.id, containerId));
  if (pool === 'harvest') {
    const borrowers = peers
      .filter((c) => ws.pool(c.id) === 'allocation' && ws.need(c.id) > 0)
      .sort((a, b) => ws.need(a.id) - ws.need(b.id) || cmp(a.id, b.id));
    for (const b of borrowers) {
      const need = ws.roundUp(ws.need(b.id));
      if (need > 0 && need <= ws.lendable(containerId)) ws.lend(containerId, b.id, need);
    }
  } else if (pool === 'allocation') {
    const lenders = peers
      .filter((c) => ws.pool(c.id) === 'harvest' && ws.lendable(c.id) > 0)
      .sort((a, b) => ws.spare(b.id) - ws.spare(a.id) || cmp(a.id, b.id));
    for (const l of lenders) {
      const remaining = ws.roundUp(ws.need(containerId));
      if (remaining <= 0) break;
      ws.lend(l.id, containerId, Math.min(remaining, ws.lendable(l.id)));
    }
  }
  return ws.plan('start', containerId);
}

/**
 * A container's queue drains: every loan it is part of, lent or borrowed, is returned, so both sides
 * go back to their initial limits. A borrower whose own memory blocks a return gives back what it
 * can; the rest becomes a pending return.
 */
export function planOnDrain(snapshot: TenantSnapshot, containerId: string, config: PolicyConfig): LendingPlan {
  const ws = new LendingWorkspace(snapshot, config);
  ws.get(containerId);
  for (const loan of ws.loansOf(containerId)) ws.returnLoan(loan.lender, loan.borrower);
  return ws.plan('drain', containerId);
}

/** Tries again every loan whose return was blocked before. */
export function planRetryReturns(snapshot: TenantSnapshot, config: PolicyConfig): LendingPlan {
  const ws = new LendingWorkspace(snapshot, config);
  for (const loan of ws.pendingLoans()) ws.returnLoan(loan.lender, loan.borrower);
  return ws.plan('retry', null);
}

/** The steps that undo an executed prefix of a plan, to run in the order given. Evictions need no undo. */
export function undoSteps(executed: readonly LendingStep[], config: PolicyConfig): LendingStep[] {
  const undo: LendingStep[] = [];
  for (const step of [...executed].reverse()) {
    if (step.kind === 'lowerLimit') {
      undo.push({ kind: 'raiseLimit', container: step.container, fromBytes: step.toBytes, toBytes: step.fromBytes });
    } else if (step.kind === 'raiseLimit') {
      undo.push({
        kind: 'evict',
        container: step.container,
        usageAtMostBytes: step.fromBytes - headroomBytes(step.fromBytes, config),
      });
      undo.push({ kind: 'lowerLimit', container: step.container, fromBytes: step.toBytes, toBytes: step.fromBytes });
    }
  }
  return undo;
}

/**
 * Runs one step on a snapshot, as the kernel would: eviction frees at most the store's memory; a
 * limit change must start from the limit the plan expected, and cannot go below usage (cgroup v1).
 * Used by tests and by callers that want a dry run before touching Docker.
 */
export function applyStep(snapshot: TenantSnapshot, step: LendingStep): TenantSnapshot {
  const index = snapshot.containers.findIndex((c) => c.id === step.container);
  const c = snapshot.containers[index];
  if (!c) throw new PolicyError('E_BAD_SNAPSHOT', `unknown container ${step.container}`);
  let next: ContainerState;
  if (step.kind === 'evict') {
    const freed = Math.max(0, Math.min(c.storeMemoryBytes, c.usageBytes - step.usageAtMostBytes));
    next = { ...c, usageBytes: c.usageBytes - freed, storeMemoryBytes: c.storeMemoryBytes - freed };
  } else {
    if (c.limitBytes !== step.fromBytes) {
      throw new PolicyError('E_UNSAFE_STEP', `${step.kind} ${c.id}: limit is ${c.limitBytes}, plan expected ${step.fromBytes}`);
    }
    if (step.toBytes < 0) throw new PolicyError('E_UNSAFE_STEP', `${step.kind} ${c.id}: negative limit ${step.toBytes}`);
    if (step.kind === 'lowerLimit' && c.usageBytes > step.toBytes) {
      throw new PolicyError('E_UNSAFE_STEP', `lowerLimit ${c.id}: usage ${c.usageBytes} is above the new limit ${step.toBytes}`);
    }
    next = { ...c, limitBytes: step.toBytes };
  }
  const containers = [...snapshot.containers];
  containers[index] = next;
  return { ...snapshot, containers };
}

/** Runs every step of a plan, then installs its loan table. */
export function applyPlan(snapshot: TenantSnapshot, plan: LendingPlan): TenantSnapshot {
  const after = plan.steps.reduce(applyStep, snapshot);
  return { ...after, loans: plan.loansAfter };
}
