import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ClusterState } from './state';

/** The controller's Prometheus metrics, in its own Registry (no process-global default metrics). */
export class ControllerMetrics {
  readonly registry = new Registry();
  readonly invocations: Counter<'tenant' | 'function' | 'outcome'>;
  readonly scheduleSeconds: Histogram;
  readonly invocationSeconds: Histogram<'tenant' | 'function'>;
  readonly nodeEvents: Counter<'event'>;
  readonly profilingRuns: Counter<'outcome'>;

  constructor(state: ClusterState) {
    const registry = this.registry;
    this.invocations = new Counter({
      name: 'ephemera_invocations_total',
      help: 'Invocations by outcome (succeeded, failed, node_lost, no_capacity)',
      labelNames: ['tenant', 'function', 'outcome'],
      registers: [registry],
    });
    this.scheduleSeconds = new Histogram({
      name: 'ephemera_schedule_seconds',
      help: 'Time to choose a node and account the task (choose + place)',
      buckets: [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3],
      registers: [registry],
    });
    this.invocationSeconds = new Histogram({
      name: 'ephemera_invocation_seconds',
      help: 'Invocation latency seen by the controller, placement to result',
      labelNames: ['tenant', 'function'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers: [registry],
    });
    this.nodeEvents = new Counter({
      name: 'ephemera_node_events_total',
      help: 'Node agent registrations, restarts, disconnects and losses',
      labelNames: ['event'],
      registers: [registry],
    });
    this.profilingRuns = new Counter({
      name: 'ephemera_profiling_runs_total',
      help: 'Profiling runs at deploy by outcome',
      labelNames: ['outcome'],
      registers: [registry],
    });
    const perNode = (name: string, help: string, pick: (n: ReturnType<ClusterState['nodes']>[number]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['node', 'status'],
        registers: [registry],
        collect() {
          this.reset();
          for (const n of state.nodes()) this.set({ node: n.name, status: n.status }, pick(n));
        },
      });
    perNode('ephemera_node_limit_bytes', 'N_lim: memory the node may hand out as container limits', (n) => n.limitBytes);
    perNode('ephemera_node_allocated_bytes', 'N_alloc: sum of the running tasks\' limits', (n) => n.allocBytes);
    perNode('ephemera_node_required_bytes', 'N_req: sum of the running tasks\' profiled demand', (n) => n.reqBytes);
    perNode('ephemera_node_running_tasks', 'Tasks running on the node', (n) => n.tasks.length);
  }
}
