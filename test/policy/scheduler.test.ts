import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  chooseNodeLinear,
  IndexedCluster,
  LinearCluster,
  MiB,
  parseSchedulerTrace,
  PolicyError,
  scheduleTasks,
  traceTaskToSpec,
  type Scoring,
  type TaskSpec,
} from '../../policy';

const SIX_TASKS = join(__dirname, '..', '..', 'policy', 'traces', 'six-tasks.txt');
const twoNodes = [
  { id: 'node1', limitBytes: 1024 * MiB },
  { id: 'node2', limitBytes: 1024 * MiB },
];

function replay(scoring: Scoring, engine: 'linear' | 'indexed') {
  const tasks = parseSchedulerTrace(readFileSync(SIX_TASKS, 'utf8')).map(traceTaskToSpec);
  const cluster = engine === 'linear' ? new LinearCluster(twoNodes) : new IndexedCluster(twoNodes);
  const result = scheduleTasks(twoNodes, tasks, scoring, cluster);
  return result.nodes.map((n) => ({ alloc: n.allocBytes / MiB, req: n.reqBytes / MiB, tasks: n.tasks }));
}

describe('the original six-task trace on two 1024 MB nodes (notes §5, thesis table 5.3)', () => {
  for (const engine of ['linear', 'indexed'] as const) {
    it(`complementarity → 750/778 and 450/262 (${engine})`, () => {
      const [n1, n2] = replay('complementarity', engine);
      expect(n1).toEqual({ alloc: 750, req: 778, tasks: ['io_intense_task1', 'cpu_intense_task1', 'io_intense_task2', 'io_intense_task3'] });
      expect(n2).toEqual({ alloc: 450, req: 262, tasks: ['cpu_intense_task2', 'io_intense_task4'] });
    });

    it(`most-free → 600/1032 and 600/8 (${engine})`, () => {
      const [n1, n2] = replay('most-free', engine);
      expect(n1).toEqual({ alloc: 600, req: 1032, tasks: ['io_intense_task1', 'io_intense_task2', 'io_intense_task3', 'io_intense_task4'] });
      expect(n2).toEqual({ alloc: 600, req: 8, tasks: ['cpu_intense_task1', 'cpu_intense_task2'] });
    });

    it(`min-gap → 900/1036 and 300/4; the last task lands on node 1 (${engine})`, () => {
      const [n1, n2] = replay('min-gap', engine);
      expect(n1!.alloc).toBe(900);
      expect(n1!.req).toBe(1036);
      expect(n1!.tasks.at(-1)).toBe('io_intense_task4');
      expect(n2).toEqual({ alloc: 300, req: 4, tasks: ['cpu_intense_task2'] });
    });
  }

  it('min-gap before the last task: |1036 − 900| = 136 on node 1 beats |262 − 450| = 188 on node 2', () => {
    const nodes = [
      { id: 'node1', limitBytes: 1024, allocBytes: 750, reqBytes: 778 },
      { id: 'node2', limitBytes: 1024, allocBytes: 300, reqBytes: 4 },
    ];
    expect(chooseNodeLinear(nodes, { id: 'io4', limitBytes: 150, memBytes: 258 }, 'min-gap')).toBe(0);
  });
});

describe('filter and edge cases', () => {
  it('fits when N_alloc + T_lim equals N_lim exactly, not one byte more', () => {
    const task = { id: 't', limitBytes: 100, memBytes: 10 };
    expect(chooseNodeLinear([{ id: 'a', limitBytes: 100, allocBytes: 0, reqBytes: 0 }], task, 'most-free')).toBe(0);
    expect(chooseNodeLinear([{ id: 'a', limitBytes: 99, allocBytes: 0, reqBytes: 0 }], task, 'most-free')).toBeNull();
  });

  it('a task no node fits is reported unplaced, and later tasks still place', () => {
    const nodes = [{ id: 'a', limitBytes: 100 }];
    const result = scheduleTasks(nodes, [
      { id: 'big', limitBytes: 200, memBytes: 1 },
      { id: 'small', limitBytes: 50, memBytes: 1 },
    ], 'complementarity');
    expect(result.unplaced).toEqual(['big']);
    expect(result.nodes[0]!.tasks).toEqual(['small']);
  });

  it('finish undoes place exactly', () => {
    const cluster = new IndexedCluster(twoNodes);
    const task = { id: 't', limitBytes: 150 * MiB, memBytes: 258 * MiB };
    cluster.place(1, task);
    expect(cluster.node(1)).toMatchObject({ allocBytes: 150 * MiB, reqBytes: 258 * MiB });
    cluster.finish(1, task);
    expect(cluster.nodes()).toEqual(new LinearCluster(twoNodes).nodes());
  });

  it('a malformed trace line is rejected with its number and reason', () => {
    const bad = 'io 150 2 256\n\n# comment\ncpu 300 four 0\n';
    try {
      parseSchedulerTrace(bad, 'bad.txt');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(PolicyError);
      expect((err as PolicyError).code).toBe('E_BAD_TRACE');
      expect((err as PolicyError).message).toMatch(/bad\.txt:4: mem_mb must be a non-negative number/);
    }
    expect(() => parseSchedulerTrace('a 1 2')).toThrow(/:1: expected 4 fields/);
    expect(() => parseSchedulerTrace('a 0 2 3')).toThrow(/limit_mb must be > 0/);
  });
});

describe('the indexed cluster chooses exactly as the linear scan', () => {
  type Op = { kind: 'arrive'; task: TaskSpec } | { kind: 'finish'; pick: number };
  // Small integer ranges on purpose: they make ties in surplus and free memory frequent.
  const task = fc.record({
    id: fc.constant('t'),
    limitBytes: fc.integer({ min: 1, max: 12 }).map((x) => x * 50),
    memBytes: fc.integer({ min: 0, max: 30 }).map((x) => x * 25),
  });
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 3, arbitrary: task.map((t) => ({ kind: 'arrive' as const, task: t })) },
    { weight: 1, arbitrary: fc.nat(1000).map((pick) => ({ kind: 'finish' as const, pick })) },
  );

  it('for every scoring, over random clusters and place/finish sequences', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 20 }).map((x) => x * 100), { minLength: 1, maxLength: 70 }),
        fc.array(op, { minLength: 1, maxLength: 120 }),
        fc.constantFrom<Scoring>('complementarity', 'min-gap', 'most-free'),
        (limits, ops, scoring) => {
          const specs = limits.map((limitBytes, i) => ({ id: `n${i}`, limitBytes }));
          const linear = new LinearCluster(specs);
          const indexed = new IndexedCluster(specs);
          const running: { node: number; task: TaskSpec }[] = [];
          for (const o of ops) {
            if (o.kind === 'arrive') {
              const a = linear.choose(o.task, scoring);
              const b = indexed.choose(o.task, scoring);
              expect(b).toBe(a);
              if (a !== null) {
                linear.place(a, o.task);
                indexed.place(a, o.task);
                running.push({ node: a, task: o.task });
              }
            } else if (running.length > 0) {
              const [done] = running.splice(o.pick % running.length, 1);
              linear.finish(done!.node, done!.task);
              indexed.finish(done!.node, done!.task);
            }
          }
          expect(indexed.nodes()).toEqual(linear.nodes());
        },
      ),
      { seed: 20240411, numRuns: 300 },
    );
  });
});
