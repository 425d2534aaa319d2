import { createCluster, type Cluster, type NodeState, type Scoring, type TaskSpec } from '../policy';
import type { RunningTask } from '../link/index';

/**
 * The controller's view of the cluster: every node agent with its N_lim and the tasks it runs, for
 * all tenants together (node capacity is node-wide, so tenants can never overcommit a node between
 * them). No I/O: the server feeds it link events and asks it for placements.
 *
 * Placement runs on a policy `Cluster` over the *ready* nodes only, ordered by name so that ties
 * (lowest index) are deterministic whatever order the agents registered in. place/finish are O(1)
 * (linear engine) or O(log n) (indexed engine); joins and losses rebuild the cluster, O(n), which is
 * rare next to invocations.
 */

export type NodeStatus = 'ready' | 'unreachable' | 'lost';

export interface NodeView {
  name: string;
  instanceId: string;
  status: NodeStatus;
  limitBytes: number;
  allocBytes: number;
  reqBytes: number;
  tasks: RunningTask[];
  registeredAt: string;
}

interface NodeEntry {
  name: string;
  instanceId: string;
  status: NodeStatus;
  limitBytes: number;
  allocBytes: number;
  reqBytes: number;
  tasks: Map<string, RunningTask>;
  /** Index in the placement cluster; -1 while the node takes no placements. */
  slot: number;
  registeredAt: string;
}

export interface RegisterOutcome {
  /** The name was known under another instance id: the agent process restarted. */
  restarted: boolean;
  /** Tasks the controller had on this node that the agent no longer runs: failed, capacity released. */
  failed: RunningTask[];
  /** Tasks the agent runs that the controller did not know (a restarted controller): now accounted. */
  adopted: RunningTask[];
}

function spec(task: RunningTask): TaskSpec {
  return { id: task.taskId, limitBytes: task.limitBytes, memBytes: task.memBytes };
}

export class ClusterState {
  private readonly entries = new Map<string, NodeEntry>();
  private readonly taskNode = new Map<string, string>();
  private slots: NodeEntry[] = [];
  private cluster: Cluster;
  scoring: Scoring;
  private readonly indexedFromNodes: number;

  constructor(options: { scoring: Scoring; indexedFromNodes?: number }) {
    this.scoring = options.scoring;
    this.indexedFromNodes = options.indexedFromNodes ?? 256;
    this.cluster = createCluster([], this.indexedFromNodes);
  }

  /**
   * An agent (re-)registers with the tasks it runs. Whatever the controller believed about the node
   * is replaced by the agent's word: the agent is the one that knows which containers exist.
   */
  register(node: string, instanceId: string, limitBytes: number, running: readonly RunningTask[]): RegisterOutcome {
    const previous = this.entries.get(node);
    const restarted = previous !== undefined && previous.instanceId !== instanceId;
    const reported = new Map(running.map((t) => [t.taskId, t]));
    const failed: RunningTask[] = [];
    if (previous) {
      for (const task of previous.tasks.values()) {
        if (!reported.has(task.taskId)) failed.push(task);
      }
    }
    for (const task of failed) this.taskNode.delete(task.taskId);
    const adopted: RunningTask[] = [];
    const entry: NodeEntry = {
      name: node,
      instanceId,
      status: 'ready',
      limitBytes,
      allocBytes: 0,
      reqBytes: 0,
      tasks: new Map(),
      slot: -1,
      registeredAt: new Date().toISOString(),
    };
    for (const task of reported.values()) {
      const other = this.taskNode.get(task.taskId);
      if (other !== undefined && other !== node) this.dropTask(task.taskId);
      if (!previous?.tasks.has(task.taskId)) adopted.push(task);
      entry.tasks.set(task.taskId, task);
      entry.allocBytes += task.limitBytes;
      entry.reqBytes += task.memBytes;
      this.taskNode.set(task.taskId, node);
    }
    this.entries.set(node, entry);
    this.rebuild();
    return { restarted, failed, adopted };
  }

  /** Adopts tasks a heartbeat reports that the controller does not know; never drops any (races with execute). */
  adopt(node: string, running: readonly RunningTask[]): RunningTask[] {
    const entry = this.entries.get(node);
    if (!entry || entry.status !== 'ready') return [];
    const adopted = running.filter((t) => !this.taskNode.has(t.taskId));
    for (const task of adopted) this.place(node, task);
    return adopted;
  }

  /** The link dropped: no new placements there, but its tasks may still finish if it comes back. */
  markUnreachable(node: string): void {
    const entry = this.entries.get(node);
    if (!entry || entry.status !== 'ready') return;
    entry.status = 'unreachable';
    this.rebuild();
  }

  /** The node is gone for good (timeout): its tasks fail and its capacity leaves the cluster. */
  markLost(node: string): RunningTask[] {
    const entry = this.entries.get(node);
    if (!entry) return [];
    const failed = [...entry.tasks.values()];
    for (const task of failed) this.taskNode.delete(task.taskId);
    entry.tasks.clear();
    entry.allocBytes = 0;
    entry.reqBytes = 0;
    const wasPlaceable = entry.slot >= 0;
    entry.status = 'lost';
    if (wasPlaceable) this.rebuild();
    return failed;
  }

  /** The best ready node for the task under the current scoring, or null when none fits. */
  choose(task: TaskSpec): string | null {
    const slot = this.cluster.choose(task, this.scoring);
    return slot === null ? null : this.slots[slot]!.name;
  }

  place(node: string, task: RunningTask): void {
    const entry = this.entries.get(node);
    if (!entry) throw new RangeError(`no node ${node}`);
    if (this.taskNode.has(task.taskId)) throw new RangeError(`task ${task.taskId} is already placed`);
    entry.tasks.set(task.taskId, task);
    entry.allocBytes += task.limitBytes;
    entry.reqBytes += task.memBytes;
    this.taskNode.set(task.taskId, node);
    if (entry.slot >= 0) this.cluster.place(entry.slot, spec(task));
  }

  /** The task ended (any outcome): its T_lim and T_mem leave the node. Unknown ids are ignored. */
  finish(taskId: string): { node: string; task: RunningTask } | undefined {
    const node = this.taskNode.get(taskId);
    if (node === undefined) return undefined;
    const task = this.dropTask(taskId);
    return task ? { node, task } : undefined;
  }

  nodeOf(taskId: string): string | undefined {
    return this.taskNode.get(taskId);
  }

  status(node: string): NodeStatus | undefined {
    return this.entries.get(node)?.status;
  }

  instanceOf(node: string): string | undefined {
    return this.entries.get(node)?.instanceId;
  }

  readyNodes(): string[] {
    return this.slots.map((e) => e.name);
  }

  /** A node's N_lim, N_alloc, N_req as the policy sees them (undefined when unknown). */
  nodeState(node: string): NodeState | undefined {
    const e = this.entries.get(node);
    return e ? { id: e.name, limitBytes: e.limitBytes, allocBytes: e.allocBytes, reqBytes: e.reqBytes } : undefined;
  }

  nodes(): NodeView[] {
    return [...this.entries.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((e) => ({
        name: e.name,
        instanceId: e.instanceId,
        status: e.status,
        limitBytes: e.limitBytes,
        allocBytes: e.allocBytes,
        reqBytes: e.reqBytes,
        tasks: [...e.tasks.values()],
        registeredAt: e.registeredAt,
      }));
  }

  private dropTask(taskId: string): RunningTask | undefined {
    const node = this.taskNode.get(taskId);
    if (node === undefined) return undefined;
    this.taskNode.delete(taskId);
    const entry = this.entries.get(node)!;
    const task = entry.tasks.get(taskId);
    if (!task) return undefined;
    entry.tasks.delete(taskId);
    entry.allocBytes -= task.limitBytes;
    entry.reqBytes -= task.memBytes;
    if (entry.slot >= 0) this.cluster.finish(entry.slot, spec(task));
    return task;
  }

  private rebuild(): void {
    for (const e of this.entries.values()) e.slot = -1;
    this.slots = [...this.entries.values()]
      .filter((e) => e.status === 'ready')
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.slots.forEach((e, i) => (e.slot = i));
    this.cluster = createCluster(
      this.slots.map((e) => ({ id: e.name, limitBytes: e.limitBytes, allocBytes: e.allocBytes, reqBytes: e.reqBytes })),
      this.indexedFromNodes,
    );
  }
}
