import {
  applyPlan,
  DEFAULT_POLICY_CONFIG,
  IndexedCluster,
  LinearCluster,
  MiB,
  planOnDrain,
  planOnStart,
  type Cluster,
  type ContainerState,
  type Scoring,
  type TaskSpec,
  type TenantSnapshot,
} from '../../policy';
import type { BenchResult, Suite, SuiteOptions } from '../frame';

/**
 * Decisions per second of the policy engine, no I/O: the scheduler at 2 … 10,000 nodes (thesis: ~2 µs
 * per decision at 2 nodes, 418 µs at 1,000) and the lending planner at 1 … 100 containers (thesis:
 * < 60 µs at 10). Inputs come from a seeded generator, so every run measures the same decisions.
 */

const NODE_COUNTS = [2, 100, 1_000, 10_000];
const CONTAINER_COUNTS = [1, 2, 5, 10, 20, 50, 100];
const SCORINGS: Scoring[] = ['complementarity', 'min-gap', 'most-free'];

/** mulberry32: a fixed-seed generator so every run schedules the same tasks. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Timing {
  decisions: number;
  seconds: number;
}

/** Runs `step` in batches until `budgetS` has passed (at least `minDecisions`). */
async function measure(budgetS: number, minDecisions: number, step: (i: number) => void): Promise<Timing> {
  // Warm-up so the JIT has compiled the hot path before the clock starts.
  for (let i = 0; i < Math.min(200, minDecisions); i++) step(i);
  let decisions = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  let batch = 1;
  while (decisions < minDecisions || elapsed < budgetS) {
    for (let i = 0; i < batch; i++) step(decisions + i);
    decisions += batch;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if (batch < 4096) batch *= 2;
  }
  await new Promise((resolve) => setImmediate(resolve));
  return { decisions, seconds: elapsed };
}

function schedulerWorkload(nodes: number, engine: 'linear' | 'indexed') {
  const random = seeded(nodes * 7919 + (engine === 'indexed' ? 1 : 0));
  const specs = Array.from({ length: nodes }, (_, i) => ({ id: `n${i}`, limitBytes: 1024 * MiB }));
  const cluster: Cluster = engine === 'indexed' ? new IndexedCluster(specs) : new LinearCluster(specs);
  // The thesis' two task shapes plus random ones, so surplus and deficit both occur.
  const tasks: TaskSpec[] = Array.from({ length: 1024 }, (_, i) => {
    const limitMb = [150, 300, 128, 512][i % 4]!;
    return { id: `t${i}`, limitBytes: limitMb * MiB, memBytes: Math.floor(random() * 2 * limitMb) * MiB };
  });
  // Fill the cluster to about half its configured memory, then keep it there: every decision places
  // one task and finishes the oldest one.
  const running: { node: number; task: TaskSpec }[] = [];
  let filled = 0;
  for (let i = 0; filled < nodes * 512 * MiB && i < nodes * 16; i++) {
    const task = tasks[i % tasks.length]!;
    const node = cluster.choose(task, 'most-free');
    if (node === null) break;
    cluster.place(node, task);
    running.push({ node, task });
    filled += task.limitBytes;
  }
  return { cluster, tasks, running };
}

function tenantWorkload(containers: number): { snapshot: TenantSnapshot; starter: string } {
  const random = seeded(containers * 104729);
  // The starter is the last allocation (odd-index) container: it borrows from every running harvest one.
  const starterIndex = containers > 1 ? (containers % 2 === 0 ? containers - 1 : containers - 2) : 0;
  const list: ContainerState[] = Array.from({ length: containers }, (_, i) => {
    // Even indices harvest (small demand in a big limit), odd ones need to borrow.
    const harvest = i % 2 === 0;
    const limitMb = harvest ? 300 + Math.floor(random() * 700) : 150 + Math.floor(random() * 100);
    const fileMb = harvest ? 0 : 100 + Math.floor(random() * 150);
    return {
      id: `c${i}`,
      tenant: 't',
      function: `f${i % 3}`,
      workflow: 'w',
      limitBytes: limitMb * MiB,
      initialLimitBytes: limitMb * MiB,
      profile: { peakMemoryBytes: (2 + Math.floor(random() * 20)) * MiB, largestFileBytes: fileMb * MiB },
      running: i !== starterIndex,
      usageBytes: 20 * MiB,
      storeMemoryBytes: 10 * MiB,
    };
  });
  return { snapshot: { nowMs: 0, containers: list, loans: [] }, starter: list[starterIndex]!.id };
}

function result(
  pass: number,
  target: string,
  workload: string,
  parameters: BenchResult['parameters'],
  timing: Timing,
): BenchResult {
  return {
    suite: 'policy',
    target,
    workload,
    parameters,
    pass,
    phase: 'n/a',
    figures: {
      decisions_per_s: Math.round(timing.decisions / timing.seconds),
      lat_us: Math.round((timing.seconds / timing.decisions) * 1e6 * 1000) / 1000,
      decisions: timing.decisions,
    },
    oomKills: null,
  };
}

export const policySuite: Suite = {
  name: 'policy',
  description:
    'Policy engine decisions per second: scheduler (linear and indexed) at 2/100/1,000/10,000 nodes, lending planner at 1…100 containers',
  async run(opts: SuiteOptions): Promise<BenchResult[]> {
    const results: BenchResult[] = [];
    const deadline = Date.now() + opts.timeCapS * 1000;
    const budgetS = opts.quick ? 0.05 : 0.5;
    const minDecisions = opts.quick ? 50 : 500;
    const scorings = opts.quick ? SCORINGS.slice(0, 1) : SCORINGS;
    const config = DEFAULT_POLICY_CONFIG;
    const overTime = () => {
      if (Date.now() < deadline) return false;
      opts.log(`policy: time cap of ${opts.timeCapS} s reached, stopping early`);
      return true;
    };

    for (let pass = 1; pass <= opts.passes; pass++) {
      for (const nodes of NODE_COUNTS) {
        for (const engine of ['linear', 'indexed'] as const) {
          for (const scoring of scorings) {
            if (overTime()) return results;
            const { cluster, tasks, running } = schedulerWorkload(nodes, engine);
            let next = 0;
            const timing = await measure(budgetS, minDecisions, (i) => {
              const task = tasks[i % tasks.length]!;
              const node = cluster.choose(task, scoring);
              if (node !== null) {
                cluster.place(node, task);
                running.push({ node, task });
              }
              if (running.length > next) {
                const done = running[next++]!;
                cluster.finish(done.node, done.task);
              }
            });
            const r = result(pass, `scheduler-${engine}`, 'schedule', { nodes, scoring, engine }, timing);
            opts.log(`policy: scheduler ${engine} ${scoring} ${nodes} nodes: ${r.figures.decisions_per_s} decisions/s (${r.figures.lat_us} µs)`);
            results.push(r);
          }
        }
      }
      for (const containers of CONTAINER_COUNTS) {
        if (overTime()) return results;
        const { snapshot, starter } = tenantWorkload(containers);
        const startPlan = planOnStart(snapshot, starter, config);
        const lent = applyPlan(snapshot, startPlan);
        const start = await measure(budgetS, minDecisions, () => planOnStart(snapshot, starter, config));
        const drain = await measure(budgetS, minDecisions, () => planOnDrain(lent, starter, config));
        const parameters = { containers, loans: startPlan.opened.length };
        results.push(result(pass, 'lending', 'plan-on-start', parameters, start));
        results.push(result(pass, 'lending', 'plan-on-drain', parameters, drain));
        opts.log(
          `policy: lending ${containers} containers (${startPlan.opened.length} loans): start ${results.at(-2)!.figures.lat_us} µs, drain ${results.at(-1)!.figures.lat_us} µs`,
        );
      }
    }
    return results;
  },
};
