import { z } from 'zod';
import { betterScore, fits, scoreNode, type NodeState, type Scoring, type TaskSpec } from '../policy';

/**
 * The Kubernetes scheduler extender (k8s.io/kube-scheduler/extender/v1): kube-scheduler POSTs
 * `ExtenderArgs` to `<urlPrefix>/filter` and `<urlPrefix>/prioritize` and reads back an
 * `ExtenderFilterResult` and a `HostPriorityList`. The Go structs carry no json tags, so the field
 * names on the wire are the Go names: `Pod`, `Nodes`, `NodeNames`, `FailedNodes`,
 * `FailedAndUnresolvableNodes`, `Error`, `Host`, `Score`. Inside `Pod` and `Nodes` the core/v1
 * objects use their usual lower-case names (`metadata`, `spec`, `status.allocatable`).
 *
 * The same policy as the controller's own placement: T_lim = the pod's memory limit, T_mem = the
 * `ephemera.io/profile-mem` annotation (the profiled U + F; T_lim when absent, which makes the
 * task neutral under `complementarity`), N_lim = the node's allocatable memory (or, with
 * `nodeCacheCapable`, the registered agent's N_lim), N_alloc/N_req = the controller's view of the
 * tasks on the node of that name.
 */

export const PROFILE_MEM_ANNOTATION = 'ephemera.io/profile-mem';
/** HostPriority scores range over MinExtenderPriority … MaxExtenderPriority. */
export const MAX_EXTENDER_PRIORITY = 10;

const quantity = z.union([z.string(), z.number()]);
const ContainerSchema = z
  .object({
    name: z.string().optional(),
    resources: z
      .object({
        limits: z.record(z.string(), quantity).optional(),
        requests: z.record(z.string(), quantity).optional(),
      })
      .loose()
      .optional(),
  })
  .loose();
const PodSchema = z
  .object({
    metadata: z
      .object({
        name: z.string().optional(),
        namespace: z.string().optional(),
        annotations: z.record(z.string(), z.string()).optional(),
      })
      .loose()
      .optional(),
    spec: z
      .object({
        containers: z.array(ContainerSchema).default([]),
        initContainers: z.array(ContainerSchema).optional(),
      })
      .loose(),
  })
  .loose();
const NodeSchema = z
  .object({
    metadata: z.object({ name: z.string().min(1) }).loose(),
    status: z
      .object({
        allocatable: z.record(z.string(), quantity).optional(),
        capacity: z.record(z.string(), quantity).optional(),
      })
      .loose()
      .optional(),
  })
  .loose();
export type KubeNode = z.infer<typeof NodeSchema>;

export const ExtenderArgsSchema = z
  .object({
    Pod: PodSchema,
    Nodes: z.object({ items: z.array(NodeSchema).nullable().default([]) }).loose().nullable().optional(),
    NodeNames: z.array(z.string()).nullable().optional(),
  })
  .loose()
  .refine((a) => (a.Nodes !== undefined && a.Nodes !== null) || (a.NodeNames !== undefined && a.NodeNames !== null), {
    message: 'either Nodes (nodeCacheCapable: false) or NodeNames (nodeCacheCapable: true) must be set',
  });
export type ExtenderArgs = z.infer<typeof ExtenderArgsSchema>;

export interface ExtenderFilterResult {
  Nodes?: { items: KubeNode[] } | null;
  NodeNames?: string[] | null;
  FailedNodes: Record<string, string>;
  FailedAndUnresolvableNodes?: Record<string, string>;
  Error: string;
}

export interface HostPriority {
  Host: string;
  Score: number;
}

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

/**
 * A Kubernetes resource.Quantity in bytes: `128Mi`, `1G`, `134217728`, `1.5Gi`, `129e6`, `500m`
 * (milli-bytes, rounded up as the API server does for memory). Throws RangeError on anything else.
 */
export function parseQuantity(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`invalid quantity ${value}`);
    return Math.ceil(value);
  }
  const m = /^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([eE][+-]?[0-9]+)|(n|u|m|k|M|G|T|P|E)?)$/.exec(value.trim());
  if (!m) throw new RangeError(`invalid quantity ${JSON.stringify(value)}`);
  const number = Number(m[1]);
  let scale = 1;
  if (m[2]) scale = BINARY[m[2]]!;
  else if (m[3]) scale = 10 ** Number(m[3].slice(1));
  else scale = DECIMAL[m[4] ?? '']!;
  return Math.ceil(number * scale);
}

/** T_lim of a pod: the sum of its containers' memory limits (or the largest init container's, if larger). */
export function podLimitBytes(pod: ExtenderArgs['Pod']): number | null {
  const limitOf = (c: z.infer<typeof ContainerSchema>): number | null => {
    const raw = c.resources?.limits?.memory;
    return raw === undefined ? null : parseQuantity(raw);
  };
  let sum = 0;
  for (const c of pod.spec.containers) {
    const limit = limitOf(c);
    if (limit === null) return null;
    sum += limit;
  }
  let init = 0;
  for (const c of pod.spec.initContainers ?? []) init = Math.max(init, limitOf(c) ?? 0);
  return Math.max(sum, init);
}

/** A view the extender reads N_lim (fallback), N_alloc and N_req from: the controller's cluster state. */
export interface ExtenderClusterView {
  scoring: Scoring;
  nodeState(name: string): NodeState | undefined;
}

export interface PodTask {
  task: TaskSpec;
  /** Why the pod cannot be judged (no memory limit, bad annotation); every node then passes unjudged. */
  unjudged: string | null;
}

export function podTask(pod: ExtenderArgs['Pod']): PodTask {
  const id = `${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? '(unnamed)'}`;
  let limit: number | null;
  try {
    limit = podLimitBytes(pod);
  } catch (err) {
    return { task: { id, limitBytes: 0, memBytes: 0 }, unjudged: `pod memory limit: ${(err as Error).message}` };
  }
  if (limit === null) return { task: { id, limitBytes: 0, memBytes: 0 }, unjudged: 'a container of the pod has no memory limit' };
  const annotation = pod.metadata?.annotations?.[PROFILE_MEM_ANNOTATION];
  let mem = limit;
  if (annotation !== undefined) {
    try {
      mem = parseQuantity(annotation);
    } catch (err) {
      return { task: { id, limitBytes: limit, memBytes: limit }, unjudged: `annotation ${PROFILE_MEM_ANNOTATION}: ${(err as Error).message}` };
    }
  }
  return { task: { id, limitBytes: limit, memBytes: mem }, unjudged: null };
}

interface Candidate {
  name: string;
  node?: KubeNode;
  state: NodeState | undefined;
}

function candidates(args: ExtenderArgs, view: ExtenderClusterView): Candidate[] {
  if (args.Nodes) {
    return (args.Nodes.items ?? []).map((node) => {
      const name = node.metadata.name;
      const known = view.nodeState(name);
      const allocatable = node.status?.allocatable?.memory ?? node.status?.capacity?.memory;
      let limitBytes: number | undefined;
      try {
        limitBytes = allocatable === undefined ? undefined : parseQuantity(allocatable);
      } catch {
        limitBytes = undefined;
      }
      const base = limitBytes ?? known?.limitBytes;
      const state = base === undefined ? undefined : { id: name, limitBytes: base, allocBytes: known?.allocBytes ?? 0, reqBytes: known?.reqBytes ?? 0 };
      return { name, node, state };
    });
  }
  return (args.NodeNames ?? []).map((name) => ({ name, state: view.nodeState(name) }));
}

/** Filter: nodes where N_alloc + T_lim ≤ N_lim; nodes with no known capacity pass (we cannot judge them). */
export function extenderFilter(args: ExtenderArgs, view: ExtenderClusterView): ExtenderFilterResult {
  const { task, unjudged } = podTask(args.Pod);
  const failed: Record<string, string> = {};
  const passed: Candidate[] = [];
  for (const c of candidates(args, view)) {
    if (unjudged !== null || c.state === undefined || fits(c.state, task)) passed.push(c);
    else {
      const free = c.state.limitBytes - c.state.allocBytes;
      failed[c.name] = `ephemera: pod memory limit ${task.limitBytes} B exceeds the node's unallocated ${free} B (N_lim ${c.state.limitBytes} B, N_alloc ${c.state.allocBytes} B)`;
    }
  }
  const result: ExtenderFilterResult = { FailedNodes: failed, Error: '' };
  if (args.Nodes) result.Nodes = { ...args.Nodes, items: passed.map((c) => c.node!) };
  else result.NodeNames = passed.map((c) => c.name);
  return result;
}

/**
 * Prioritize: the policy's choice gets 10; every other fitting node gets 0…9 by its primary score
 * (complementarity / min-gap) scaled over the candidates, or by free memory where the primary does
 * not separate them (most-free, or equal primaries). Nodes that do not fit, or whose capacity is
 * unknown, get 0. So kube-scheduler's weighted sum favours exactly the node the controller would pick.
 */
export function extenderPrioritize(args: ExtenderArgs, view: ExtenderClusterView): HostPriority[] {
  const { task, unjudged } = podTask(args.Pod);
  const all = candidates(args, view);
  if (unjudged !== null) return all.map((c) => ({ Host: c.name, Score: 0 }));
  const scored = all.map((c, index) =>
    c.state !== undefined && fits(c.state, task) ? { c, score: scoreNode(c.state, index, task, view.scoring) } : { c, score: null },
  );
  const fitting = scored.filter((s) => s.score !== null).map((s) => s.score!);
  if (fitting.length === 0) return all.map((c) => ({ Host: c.name, Score: 0 }));
  let best = fitting[0]!;
  for (const s of fitting) if (betterScore(s, best)) best = s;
  const pMin = Math.min(...fitting.map((s) => s.primary));
  const pMax = Math.max(...fitting.map((s) => s.primary));
  const fMin = Math.min(...fitting.map((s) => s.free));
  const fMax = Math.max(...fitting.map((s) => s.free));
  const spread = (x: number, lo: number, hi: number) => (hi > lo ? (x - lo) / (hi - lo) : 1);
  return scored.map(({ c, score }) => {
    if (score === null) return { Host: c.name, Score: 0 };
    if (score.index === best.index) return { Host: c.name, Score: MAX_EXTENDER_PRIORITY };
    const fraction = pMax > pMin ? spread(score.primary, pMin, pMax) : spread(score.free, fMin, fMax);
    return { Host: c.name, Score: Math.min(MAX_EXTENDER_PRIORITY - 1, Math.round(fraction * (MAX_EXTENDER_PRIORITY - 1))) };
  });
}
