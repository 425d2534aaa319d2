import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The manager's Prometheus metrics, in a registry of its own (one manager per tenant per process). */
export class ManagerMetrics {
  readonly registry = new Registry();
  readonly limitBytes: Gauge;
  readonly loanedBytes: Gauge;
  readonly plans: Counter;
  readonly steps: Counter;
  readonly decisionSeconds: Histogram;
  readonly stepSeconds: Histogram;
  readonly alarmResponseSeconds: Histogram;
  readonly linkMessages: Counter;
  readonly invocations: Counter;

  constructor(tenant: string) {
    this.registry.setDefaultLabels({ tenant });
    const registers = [this.registry];
    this.limitBytes = new Gauge({ name: 'ephemera_manager_limit_bytes', help: 'Container memory limit as the manager set it', labelNames: ['container'], registers });
    this.loanedBytes = new Gauge({ name: 'ephemera_manager_loaned_bytes', help: 'Bytes out on loan in the tenant', registers });
    this.plans = new Counter({ name: 'ephemera_manager_plans_total', help: 'Lending plans by trigger and outcome', labelNames: ['trigger', 'outcome'], registers });
    this.steps = new Counter({ name: 'ephemera_manager_steps_total', help: 'Plan steps by kind and outcome', labelNames: ['kind', 'outcome'], registers });
    this.decisionSeconds = new Histogram({
      name: 'ephemera_manager_decision_seconds',
      help: 'Event to plan decided, Docker excluded',
      labelNames: ['event'],
      buckets: [1e-6, 5e-6, 1e-5, 2e-5, 6e-5, 1e-4, 5e-4, 1e-3, 1e-2],
      registers,
    });
    this.stepSeconds = new Histogram({ name: 'ephemera_manager_step_seconds', help: 'One executed step incl. read-back', labelNames: ['kind'], buckets: [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2], registers });
    this.alarmResponseSeconds = new Histogram({ name: 'ephemera_manager_alarm_response_seconds', help: 'Memory alarm to the alarmed container\'s limit raised', buckets: [0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1], registers });
    this.linkMessages = new Counter({ name: 'ephemera_manager_link_messages_total', help: 'Checked messages received on the link', labelNames: ['type'], registers });
    this.invocations = new Counter({ name: 'ephemera_manager_invocations_total', help: 'Invocations run', labelNames: ['outcome'], registers });
  }
}
