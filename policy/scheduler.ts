import type { Scoring } from './config';
import type { NodeSpec, NodeState, TaskSpec } from './snapshots';

/**
 * Placement of invocations on nodes (thesis 3.4.2, 4.4.2).
 *
 * Filter: a node fits a task when N_alloc + T_lim ≤ N_lim (the thesis' pseudocode prints the
 * comparison inverted; the original code and table 5.3 use this one).
 *
 * A candidate's score is the tuple (primary, free, −index), higher is better:
 * - primary, by scoring:
 *   - `complementarity` (original code, table 5.3): with d = T_mem − T_lim and surplus s = N_alloc − N_req,
 *     d > 0 → s (the node with the most spare takes an over-demand task), d < 0 → −s (the node with the
 *     biggest deficit takes an under-demand task), d = 0 → 0. The original's ±100000 offsets keep this
 *     order, so they are not needed.
 *   - `min-gap` (thesis text): −|(N_req + T_mem) − (N_alloc + T_lim)| = −|d − s|.
 *   - `most-free` (baseline): 0, so free memory alone decides.
 * - free: configured memory left after placement, N_lim − N_alloc − T_lim;
 * - then the lowest node index.
 */

export interface CandidateScore {
  readonly primary: number;
  readonly free: number;
  readonly index: number;
}

export function fits(node: Pick<NodeState, 'limitBytes' | 'allocBytes'>, task: TaskSpec): boolean {
  return node.allocBytes + task.limitBytes <= node.limitBytes;
}

function primaryScore(scoring: Scoring, surplus: number, task: TaskSpec): number {
  const d = task.memBytes - task.limitBytes;
  switch (scoring) {
    case 'complementarity':
      return d > 0 ? surplus : d < 0 ? -surplus : 0;
    case 'min-gap':
      return -Math.abs(d - surplus);
    case 'most-free':
      return 0;
  }
}

export function scoreNode(node: NodeState, index: number, task: TaskSpec, scoring: Scoring): CandidateScore {
  return {
    primary: primaryScore(scoring, node.allocBytes - node.reqBytes, task),
    free: node.limitBytes - node.allocBytes - task.limitBytes,
    index,
  };
}

/** True when a is strictly better than b. Indices differ between candidates, so there are no ties. */
export function betterScore(a: CandidateScore, b: CandidateScore): boolean {
  if (a.primary !== b.primary) return a.primary > b.primary;
  if (a.free !== b.free) return a.free > b.free;
  return a.index < b.index;
}

/** The linear scan: index of the best fitting node, or null if none fits. */
export function chooseNodeLinear(nodes: readonly NodeState[], task: TaskSpec, scoring: Scoring): number | null {
  let best: CandidateScore | null = null;
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    if (!fits(node, task)) continue;
    const score = scoreNode(node, i, task, scoring);
    if (best === null || betterScore(score, best)) best = score;
  }
  return best === null ? null : best.index;
}

/** A cluster's mutable allocation state with one placement engine behind it. */
export interface Cluster {
  readonly size: number;
  node(index: number): NodeState;
  nodes(): NodeState[];
  choose(task: TaskSpec, scoring: Scoring): number | null;
  /** Adds the task's T_lim and T_mem to the node. */
  place(index: number, task: TaskSpec): void;
  /** Removes them again when the invocation finishes. */
  finish(index: number, task: TaskSpec): void;
}

function checkSpecs(specs: readonly NodeSpec[]): void {
  for (const s of specs) {
    if (!(s.limitBytes >= 0)) throw new RangeError(`node ${s.id}: limit must be ≥ 0`);
  }
}

/** Flat arrays, O(1) place/finish, O(n) choose. Best for small clusters. */
export class LinearCluster implements Cluster {
  private readonly state: { id: string; limitBytes: number; allocBytes: number; reqBytes: number }[];

  constructor(specs: readonly (NodeSpec | NodeState)[]) {
    checkSpecs(specs);
    this.state = specs.map((s) => ({
      id: s.id,
      limitBytes: s.limitBytes,
      allocBytes: 'allocBytes' in s ? s.allocBytes : 0,
      reqBytes: 'reqBytes' in s ? s.reqBytes : 0,
    }));
  }

  get size(): number {
    return this.state.length;
  }

  node(index: number): NodeState {
    const n = this.state[index];
    if (!n) throw new RangeError(`no node ${index}`);
    return { ...n };
  }

  nodes(): NodeState[] {
    return this.state.map((n) => ({ ...n }));
  }

  choose(task: TaskSpec, scoring: Scoring): number | null {
    return chooseNodeLinear(this.state, task, scoring);
  }

  place(index: number, task: TaskSpec): void {
    const n = this.state[index];
    if (!n) throw new RangeError(`no node ${index}`);
    n.allocBytes += task.limitBytes;
    n.reqBytes += task.memBytes;
  }

  finish(index: number, task: TaskSpec): void {
    const n = this.state[index];
    if (!n) throw new RangeError(`no node ${index}`);
    n.allocBytes -= task.limitBytes;
    n.reqBytes -= task.memBytes;
  }
}

/**
 * The same choices for large clusters: a segment tree over node indices keeps, per subtree, the
 * largest free memory and the smallest and largest surplus. A choice is a branch-and-bound descent:
 * a subtree is skipped when no node in it fits (max free < T_lim) or when the best score any node in
 * it could reach, (primary bound, max free, its first index), is not better than the best found. That
 * bound dominates every node of the subtree component-wise, so skipping never loses the answer; the
 * property test in test/policy checks the result equals the linear scan. place/finish are O(log n).
 */
export class IndexedCluster implements Cluster {
  private readonly linear: LinearCluster;
  private readonly leaves: number;
  private readonly maxFree: Float64Array;
  private readonly minSurplus: Float64Array;
  private readonly maxSurplus: Float64Array;

  constructor(specs: readonly (NodeSpec | NodeState)[]) {
    this.linear = new LinearCluster(specs);
    let leaves = 1;
    while (leaves < Math.max(1, specs.length)) leaves *= 2;
    this.leaves = leaves;
    this.maxFree = new Float64Array(2 * leaves).fill(-Infinity);
    this.minSurplus = new Float64Array(2 * leaves).fill(Infinity);
    this.maxSurplus = new Float64Array(2 * leaves).fill(-Infinity);
    for (let i = 0; i < specs.length; i++) this.setLeaf(i);
    for (let k = leaves - 1; k >= 1; k--) this.pull(k);
  }

  get size(): number {
    return this.linear.size;
  }

  node(index: number): NodeState {
    return this.linear.node(index);
  }

  nodes(): NodeState[] {
    return this.linear.nodes();
  }

  private setLeaf(index: number): void {
    const n = this.linear.node(index);
    const k = this.leaves + index;
    this.maxFree[k] = n.limitBytes - n.allocBytes;
    this.minSurplus[k] = this.maxSurplus[k] = n.allocBytes - n.reqBytes;
  }

  private pull(k: number): void {
    const l = 2 * k;
    const r = l + 1;
    this.maxFree[k] = Math.max(this.maxFree[l]!, this.maxFree[r]!);
    this.minSurplus[k] = Math.min(this.minSurplus[l]!, this.minSurplus[r]!);
    this.maxSurplus[k] = Math.max(this.maxSurplus[l]!, this.maxSurplus[r]!);
  }

  private update(index: number): void {
    this.setLeaf(index);
    for (let k = (this.leaves + index) >> 1; k >= 1; k >>= 1) this.pull(k);
  }

  place(index: number, task: TaskSpec): void {
    this.linear.place(index, task);
    this.update(index);
  }

  finish(index: number, task: TaskSpec): void {
    this.linear.finish(index, task);
    this.update(index);
  }

  /** Best primary score any node under subtree k could reach. */
  private primaryBound(k: number, d: number, scoring: Scoring): number {
    const lo = this.minSurplus[k]!;
    const hi = this.maxSurplus[k]!;
    if (scoring === 'complementarity') return d > 0 ? hi : d < 0 ? -lo : 0;
    if (scoring === 'min-gap') return d >= lo && d <= hi ? 0 : -Math.min(Math.abs(d - lo), Math.abs(d - hi));
    return 0;
  }

  // Allocation-free on purpose: this is the hot path at 10,000 nodes (see bench/suites/policy.ts).
  choose(task: TaskSpec, scoring: Scoring): number | null {
    const need = task.limitBytes;
    const d = task.memBytes - task.limitBytes;
    let bestPrimary = -Infinity;
    let bestFree = -Infinity;
    let bestIndex = -1;
    const beats = (primary: number, free: number, index: number): boolean =>
      bestIndex < 0 ||
      primary > bestPrimary ||
      (primary === bestPrimary && (free > bestFree || (free === bestFree && index < bestIndex)));
    const visit = (k: number, first: number, width: number): void => {
      if (this.maxFree[k]! < need) return;
      if (width === 1) {
        const primary = primaryScore(scoring, this.minSurplus[k]!, task);
        const free = this.maxFree[k]! - need;
        if (beats(primary, free, first)) {
          bestPrimary = primary;
          bestFree = free;
          bestIndex = first;
        }
        return;
      }
      const half = width / 2;
      const l = 2 * k;
      const r = l + 1;
      const lp = this.primaryBound(l, d, scoring);
      const rp = this.primaryBound(r, d, scoring);
      const lf = this.maxFree[l]! - need;
      const rf = this.maxFree[r]! - need;
      // Visit the more promising child first so the other is more often pruned.
      const rightFirst = rp > lp || (rp === lp && rf > lf);
      if (rightFirst) {
        if (beats(rp, rf, first + half)) visit(r, first + half, half);
        if (beats(lp, lf, first)) visit(l, first, half);
      } else {
        if (beats(lp, lf, first)) visit(l, first, half);
        if (beats(rp, rf, first + half)) visit(r, first + half, half);
      }
    };
    visit(1, 0, this.leaves);
    return bestIndex < 0 ? null : bestIndex;
  }
}

/** Picks the engine by cluster size (`scheduler.indexedFromNodes`); both make the same choices. */
export function createCluster(specs: readonly (NodeSpec | NodeState)[], indexedFromNodes: number): Cluster {
  return specs.length >= indexedFromNodes ? new IndexedCluster(specs) : new LinearCluster(specs);
}

export interface ScheduleResult {
  readonly scoring: Scoring;
  readonly nodes: readonly (NodeState & { readonly tasks: readonly string[] })[];
  /** Tasks no node could fit, in arrival order. */
  readonly unplaced: readonly string[];
}

/** Places tasks in arrival order (nothing finishes), as the original's offline experiment did. */
export function scheduleTasks(
  specs: readonly NodeSpec[],
  tasks: readonly TaskSpec[],
  scoring: Scoring,
  cluster: Cluster = new LinearCluster(specs),
): ScheduleResult {
  const placed: string[][] = specs.map(() => []);
  const unplaced: string[] = [];
  for (const task of tasks) {
    const index = cluster.choose(task, scoring);
    if (index === null) {
      unplaced.push(task.id);
      continue;
    }
    cluster.place(index, task);
    placed[index]!.push(task.id);
  }
  return { scoring, nodes: cluster.nodes().map((n, i) => ({ ...n, tasks: placed[i]! })), unplaced };
}
