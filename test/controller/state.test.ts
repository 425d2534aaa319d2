import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ClusterState } from '../../controller/index';
import type { RunningTask } from '../../link/index';
import { MiB, parseSchedulerTrace, traceTaskToSpec, type Scoring } from '../../policy';

const SIX_TASKS = join(__dirname, '..', '..', 'policy', 'traces', 'six-tasks.txt');
const trace = parseSchedulerTrace(readFileSync(SIX_TASKS, 'utf8')).map(traceTaskToSpec);

function running(id: string, limitMiB: number, memMiB: number): RunningTask {
  return { taskId: id, tenant: 't', function: 'f', limitBytes: limitMiB * MiB, memBytes: memMiB * MiB, startedAt: 0 };
}

function replay(state: ClusterState): Record<string, string[]> {
  const placed: Record<string, string[]> = {};
  for (const t of trace) {
    const node = state.choose(t);
    expect(node).not.toBeNull();
    state.place(node!, { taskId: t.id, tenant: 't', function: 'f', limitBytes: t.limitBytes, memBytes: t.memBytes, startedAt: 0 });
    (placed[node!] ??= []).push(t.id);
  }
  return placed;
}

describe('ClusterState: the six-task trace as the policy places it', () => {
  const expected: Record<Scoring, [number, number, number, number]> = {
    complementarity: [750, 778, 450, 262],
    'most-free': [600, 1032, 600, 8],
    'min-gap': [900, 1036, 300, 4],
  };
  for (const scoring of Object.keys(expected) as Scoring[]) {
    it(`${scoring}, whatever order the agents registered in`, () => {
      const state = new ClusterState({ scoring });
      // Registered in reverse: ties still go to node1 because slots are ordered by name.
      state.register('node2', 'b', 1024 * MiB, []);
      state.register('node1', 'a', 1024 * MiB, []);
      replay(state);
      const [a1, r1, a2, r2] = expected[scoring];
      expect(state.nodes().map((n) => [n.name, n.allocBytes / MiB, n.reqBytes / MiB])).toEqual([
        ['node1', a1, r1],
        ['node2', a2, r2],
      ]);
    });
  }

  it('finish releases exactly what place took; unknown ids are ignored', () => {
    const state = new ClusterState({ scoring: 'complementarity', indexedFromNodes: 1 });
    state.register('node1', 'a', 1024 * MiB, []);
    state.register('node2', 'b', 1024 * MiB, []);
    replay(state);
    for (const t of trace) expect(state.finish(t.id)?.task.taskId).toBe(t.id);
    expect(state.finish('nope')).toBeUndefined();
    expect(state.nodes().map((n) => [n.allocBytes, n.reqBytes, n.tasks.length])).toEqual([
      [0, 0, 0],
      [0, 0, 0],
    ]);
  });
});

describe('ClusterState: failures and resync', () => {
  it('an unreachable node takes no placements; a lost one fails its tasks and releases its capacity', () => {
    const state = new ClusterState({ scoring: 'most-free' });
    state.register('node1', 'a', 1024 * MiB, []);
    state.register('node2', 'b', 512 * MiB, []);
    state.place('node1', running('x', 300, 10));
    state.markUnreachable('node1');
    expect(state.choose({ id: 'y', limitBytes: 100 * MiB, memBytes: 0 })).toBe('node2');
    expect(state.choose({ id: 'y', limitBytes: 600 * MiB, memBytes: 0 })).toBeNull();
    const failed = state.markLost('node1');
    expect(failed.map((t) => t.taskId)).toEqual(['x']);
    expect(state.nodeOf('x')).toBeUndefined();
    expect(state.nodes()[0]).toMatchObject({ name: 'node1', status: 'lost', allocBytes: 0, reqBytes: 0, tasks: [] });
  });

  it('a restarted controller adopts the tasks agents report; a restarted agent fails the ones it lost', () => {
    const state = new ClusterState({ scoring: 'complementarity' });
    const outcome = state.register('node1', 'a', 1024 * MiB, [running('x', 150, 258), running('y', 300, 4)]);
    expect(outcome).toMatchObject({ restarted: false, failed: [] });
    expect(outcome.adopted.map((t) => t.taskId)).toEqual(['x', 'y']);
    expect(state.nodeState('node1')).toMatchObject({ allocBytes: 450 * MiB, reqBytes: 262 * MiB });
    // Same process reconnecting with one task finished meanwhile and its result still to come.
    const again = state.register('node1', 'a', 1024 * MiB, [running('x', 150, 258)]);
    expect(again.restarted).toBe(false);
    expect(again.failed.map((t) => t.taskId)).toEqual(['y']);
    expect(again.adopted).toEqual([]);
    const restarted = state.register('node1', 'a2', 1024 * MiB, []);
    expect(restarted.restarted).toBe(true);
    expect(restarted.failed.map((t) => t.taskId)).toEqual(['x']);
    expect(state.nodeState('node1')).toMatchObject({ allocBytes: 0, reqBytes: 0 });
  });

  it('a heartbeat adopts unknown tasks but never drops known ones', () => {
    const state = new ClusterState({ scoring: 'complementarity' });
    state.register('node1', 'a', 1024 * MiB, []);
    state.place('node1', running('x', 100, 10));
    expect(state.adopt('node1', [running('z', 50, 5)]).map((t) => t.taskId)).toEqual(['z']);
    expect(state.nodeState('node1')).toMatchObject({ allocBytes: 150 * MiB, reqBytes: 15 * MiB });
  });
});
