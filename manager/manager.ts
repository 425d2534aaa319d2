import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import {
  classifyContainer,
  DEFAULT_POLICY_CONFIG,
  headroomBytes,
  planOnDrain,
  planOnStart,
  planRetryReturns,
  planSafeguard,
  undoSteps,
  type ContainerProfile,
  type ContainerState,
  type LendingPlan,
  type LendingStep,
  type Loan,
  type PolicyConfig,
  type TenantSnapshot,
} from '../policy/index';
import type { InvocationResult, InvokeOptions } from '../engine/index';
import {
  ensureTenantToken,
  errorMessage,
  LinkServer,
  managerSocketPath,
  ToManager,
  ToMount,
  type EndpointInput,
  type HeartbeatOptions,
  type LinkSession,
  type ManagerStatus,
  type ToManagerMessage,
  type ToMountMessage,
} from '../link/index';
import { ManagerError } from './errors';
import { LABEL_FUNCTION, LABEL_TENANT, LABEL_WORKFLOW, parseManagerLabels } from './labels';
import type { LimitWriter } from './limits';
import { ManagerMetrics } from './metrics';
import { createLogger } from '../log/index';

/** Runs one invocation of a container's function (the engine's `FunctionContainer` is one). */
export interface Invoker {
  invoke(args: string[], options?: InvokeOptions): Promise<InvocationResult>;
}

export interface ContainerInit {
  /** Docker container id. */
  id: string;
  tenant: string;
  function?: string;
  workflow?: string;
  /** M_init: the limit the platform gave the container. */
  initialLimitBytes: number;
  /** From the profiling run; null = not profiled yet (neither lends nor borrows). */
  profile: ContainerProfile | null;
  invoker?: Invoker;
  /** The container's v1 memory cgroup: usage is read from it while no mount reports. */
  cgroupPath?: string;
}

export interface TenantManagerOptions {
  tenant: string;
  stateDir: string;
  limitWriter: LimitWriter;
  policy?: PolicyConfig;
  /** Default: `<stateDir>/managers/<tenant>.sock`. `false`: no link (a manager driven in-process only). */
  listen?: EndpointInput | false;
  heartbeat?: Partial<HeartbeatOptions>;
  logger?: Logger;
  /** A mount must answer an evict/shrink within this. */
  evictTimeoutMs?: number;
  /** Blocked returns are retried after this. */
  retryReturnsAfterMs?: number;
}

export interface AlarmOutcome {
  /** Alarm received → the alarmed container's limit raised (or the plan done, if nothing was raised). */
  responseMs: number;
  raisedBytes: number;
  uncoveredBytes: number;
  plan: LendingPlan;
}

export interface PlanOutcome {
  plan: LendingPlan;
  ok: boolean;
  /** The failed step and why, when `ok` is false (the executed prefix was rolled back). */
  failure?: { step: LendingStep; code: string; message: string };
  decisionMs: number;
}

interface Reading {
  usageBytes: number;
  memoryBytes: number;
  diskBytes: number;
}

interface Job {
  args: string[];
  options: InvokeOptions | undefined;
  resolve: (r: InvocationResult) => void;
  reject: (e: unknown) => void;
}

interface Entry {
  readonly id: string;
  readonly function: string;
  readonly workflow: string;
  readonly initialLimitBytes: number;
  profile: ContainerProfile | null;
  limitBytes: number;
  nonHarvestableUntilMs: number | null;
  readonly queue: Job[];
  running: boolean;
  reading: Reading | null;
  session: LinkSession<ToMountMessage> | null;
  invoker: Invoker | undefined;
  cgroupPath: string | undefined;
  stats: { inodes: number; spills: number; promotions: number } | null;
}

/** Thrown inside the executor when the manager was closed (or crashed) mid-plan: no rollback then. */
class Closed extends Error {}

/**
 * One tenant's manager on one node (thesis 3.3, 4.3). It alone writes its containers' limits. Every
 * change is a plan from `policy/`, run one at a time, step by step in the plan's order, each step
 * checked against the kernel's limit; a failed step rolls the executed prefix back, so the limits
 * always equal the manager's view. Alarms jump the queue of plans.
 */
export class TenantManager {
  readonly tenant: string;
  readonly metrics: ManagerMetrics;
  readonly log: Logger;
  readonly policy: PolicyConfig;
  private readonly entries = new Map<string, Entry>();
  private loans: Loan[] = [];
  private readonly writer: LimitWriter;
  private server: LinkServer<ToManagerMessage, ToMountMessage> | undefined;
  private readonly urgentWork: Array<() => Promise<void>> = [];
  private readonly normalWork: Array<() => Promise<void>> = [];
  private busy = false;
  private closed = false;
  private readonly shrinkWaiters = new Map<string, (usageBytes: number) => void>();
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly startedAt = performance.now();
  readonly counts = { executed: 0, rolledBack: 0, inconsistent: 0 };

  private constructor(private readonly options: TenantManagerOptions) {
    this.tenant = options.tenant;
    this.policy = options.policy ?? DEFAULT_POLICY_CONFIG;
    this.writer = options.limitWriter;
    this.log = (options.logger ?? createLogger('ephemera-manager', 'warn')).child({ tenant: options.tenant });
    this.metrics = new ManagerMetrics(options.tenant);
  }

  /** Creates the manager and starts its link (creating the tenant's token if needed). */
  static async open(options: TenantManagerOptions): Promise<TenantManager> {
    const m = new TenantManager(options);
    if (options.listen !== false) {
      const token = await ensureTenantToken(options.stateDir, options.tenant);
      m.server = new LinkServer<ToManagerMessage, ToMountMessage>({
        tenant: options.tenant,
        token,
        listen: options.listen ?? { socketPath: managerSocketPath(options.stateDir, options.tenant) },
        inbound: ToManager,
        outbound: ToMount,
        logger: m.log,
        ...(options.heartbeat === undefined ? {} : { heartbeat: options.heartbeat }),
        onMessage: (s, msg) => m.onLinkMessage(s, msg),
        onClose: (s) => {
          for (const e of m.entries.values()) if (e.session === s) e.session = null;
        },
      });
      await m.server.start();
    }
    return m;
  }

  /**
   * Rebuilds a manager after a crash: its tenant's running managed containers from Docker labels
   * (initial limit, profile), their limits from the kernel, their stores from the mounts that
   * reconnect within `mountGraceMs`; then brings the limits back to the policy's view (nothing runs,
   * no loans), keeping as pending loans whatever the containers' own memory does not let go yet.
   */
  static async recover(docker: Docker, options: TenantManagerOptions & { mountGraceMs?: number }): Promise<TenantManager> {
    const m = await TenantManager.open(options);
    const found = await docker.listContainers({ filters: JSON.stringify({ label: ['ephemera.managed=1', `${LABEL_TENANT}=${options.tenant}`] }) });
    for (const c of found) {
      const labels = c.Labels ?? {};
      const parsed = parseManagerLabels(labels);
      const current = await m.writer.read(c.Id);
      await m.addContainer({
        id: c.Id,
        tenant: labels[LABEL_TENANT] ?? '',
        function: labels[LABEL_FUNCTION] ?? 'anonymous',
        workflow: labels[LABEL_WORKFLOW] ?? '',
        // Without the label the platform's intent is lost; the limit found is the best guess.
        initialLimitBytes: parsed.initialLimitBytes ?? current,
        profile: parsed.profile,
      });
    }
    if (options.mountGraceMs) await sleep(options.mountGraceMs);
    await m.reconcile();
    return m;
  }

  get endpoint(): EndpointInput | undefined {
    return this.server?.endpoint;
  }

  // --- events ------------------------------------------------------------------------------------

  /** Container init: joins the pool with its profile. Its limit is read from the kernel. */
  async addContainer(init: ContainerInit): Promise<void> {
    if (init.tenant !== this.tenant) {
      throw new ManagerError('E_WRONG_TENANT', `container ${init.id.slice(0, 12)} belongs to tenant ${init.tenant}, this manager serves ${this.tenant}`);
    }
    if (this.entries.has(init.id)) throw new ManagerError('E_DUPLICATE_CONTAINER', `container ${init.id.slice(0, 12)} is already managed`);
    if (!Number.isSafeInteger(init.initialLimitBytes) || init.initialLimitBytes <= 0) {
      throw new ManagerError('E_BAD_INPUT', `initial limit ${init.initialLimitBytes} is not a positive byte count`);
    }
    const limit = await this.writer.read(init.id);
    this.entries.set(init.id, {
      id: init.id,
      function: init.function ?? 'anonymous',
      workflow: init.workflow ?? '',
      initialLimitBytes: init.initialLimitBytes,
      profile: init.profile,
      limitBytes: limit,
      nonHarvestableUntilMs: null,
      queue: [],
      running: false,
      reading: null,
      session: null,
      invoker: init.invoker,
      cgroupPath: init.cgroupPath,
      stats: null,
    });
    this.metrics.limitBytes.set({ container: init.id.slice(0, 12) }, limit);
    if (limit !== init.initialLimitBytes) this.adoptLoans();
  }

  /**
   * A container joins with its limit away from the platform's (a node restarted mid-loan: the
   * loan table died with the old manager, the limits Docker holds did not). What the loans known
   * now do not explain is paired into loans again, so a lender leaving or a queue draining returns
   * them as it would have before the restart.
   */
  private adoptLoans(): void {
    const net = new Map<string, number>();
    for (const l of this.loans) {
      net.set(l.borrower, (net.get(l.borrower) ?? 0) + l.bytes);
      net.set(l.lender, (net.get(l.lender) ?? 0) - l.bytes);
    }
    const unexplained = [...this.entries.values()].map((e) => ({ ...e, limitBytes: e.limitBytes - (net.get(e.id) ?? 0) }));
    const adopted = pairLoans(unexplained).map(({ returnAttempts: _pending, ...loan }) => loan);
    if (adopted.length === 0) return;
    this.loans = [...this.loans, ...adopted];
    this.metrics.loanedBytes.set(this.loans.reduce((s, l) => s + l.bytes, 0));
    this.log.info({ adopted }, 'loans adopted from the limits found (the previous manager made them)');
  }

  /** The profiling run reported (or an adopted container gets its invoker back). */
  setProfile(id: string, profile: ContainerProfile | null): void {
    this.entry(id).profile = profile;
  }

  setInvoker(id: string, invoker: Invoker, cgroupPath?: string): void {
    const e = this.entry(id);
    e.invoker = invoker;
    if (cgroupPath) e.cgroupPath = cgroupPath;
  }

  /**
   * Invoke: queued behind the container's earlier invocations (one at a time). The first job of an
   * idle container makes it running, which opens its loans before the function starts; the queue
   * draining closes them.
   */
  invoke(id: string, args: string[] = [], options?: InvokeOptions): Promise<InvocationResult> {
    const e = this.entry(id);
    if (!e.invoker) return Promise.reject(new ManagerError('E_NO_INVOKER', `container ${id.slice(0, 12)} has no invoker (adopted after a restart?)`));
    if (this.closed) return Promise.reject(new ManagerError('E_CLOSED', 'manager closed'));
    return new Promise<InvocationResult>((resolve, reject) => {
      e.queue.push({ args, options, resolve, reject });
      if (!e.running) {
        e.running = true;
        void this.runQueue(e);
      }
    });
  }

  /**
   * A container whose whole life is one run (the platform started it, e.g. through the volume
   * driver, and no invocation passes through here): running from now until `terminate`, its loans
   * opened now by the same start plan an invocation's first job runs.
   */
  beginRun(id: string): Promise<PlanOutcome> {
    const e = this.entry(id);
    if (this.closed) return Promise.reject(new ManagerError('E_CLOSED', 'manager closed'));
    if (e.running) return Promise.reject(new ManagerError('E_BAD_INPUT', `container ${id.slice(0, 12)} is already running`));
    e.running = true;
    return this.schedule(false, async () => (await this.decideAndRun('start', (snap) => ({ plan: planOnStart(snap, e.id, this.policy), extra: null }))).outcome);
  }

  /** Memory alarm from the container's adapter: answered before any queued plan. */
  alarm(id: string, shortfallBytes: number, oomPaused = false): Promise<AlarmOutcome> {
    const received = performance.now();
    this.entry(id);
    return this.schedule(true, async () => {
      const e = this.entry(id);
      const limitBefore = e.limitBytes;
      let raisedAt: number | undefined;
      const { outcome, extra } = await this.decideAndRun('safeguard', (snap) => {
        const d = planSafeguard(snap, { container: id, shortfallBytes, oomPaused }, this.policy);
        return { plan: d.plan, extra: d };
      }, (step) => {
        if (raisedAt === undefined && step.kind === 'raiseLimit' && step.container === id) raisedAt = performance.now();
      });
      e.nonHarvestableUntilMs = extra.nonHarvestableUntilMs;
      const responseMs = (raisedAt ?? performance.now()) - received;
      this.metrics.alarmResponseSeconds.observe(responseMs / 1000);
      this.log.warn({ container: id.slice(0, 12), shortfallBytes, oomPaused, responseMs, ok: outcome.ok }, 'memory alarm answered');
      return { responseMs, raisedBytes: e.limitBytes - limitBefore, uncoveredBytes: extra.uncoveredBytes, plan: outcome.plan };
    });
  }

  /**
   * Terminate: the container leaves the pool. Its loans are settled as on a drain, except that its
   * own limit is no longer touched (it is going away): a borrower it lent to gives back, and a lender
   * it borrowed from gets its memory back at once.
   */
  async terminate(id: string): Promise<PlanOutcome> {
    const e = this.entry(id);
    for (const job of e.queue.splice(0)) job.reject(new ManagerError('E_CLOSED', `container ${id.slice(0, 12)} terminated`));
    const outcome = await this.schedule(false, async () => {
      const { outcome } = await this.decideAndRun('drain', (snap) => {
        const plan = planOnDrain(snap, id, this.policy);
        return { plan: { ...plan, steps: plan.steps.filter((s) => s.container !== id) }, extra: null };
      });
      return outcome;
    });
    this.entries.delete(id);
    this.loans = this.loans.filter((l) => l.lender !== id && l.borrower !== id);
    this.metrics.limitBytes.remove({ container: id.slice(0, 12) });
    return outcome;
  }

  /** The tenant as the policy sees it. Usage comes from the mount's last report, else the cgroup. */
  async snapshot(): Promise<TenantSnapshot> {
    await this.refreshUsage();
    return this.snapshotNow();
  }

  limitOf(id: string): number {
    return this.entry(id).limitBytes;
  }

  loanTable(): readonly Loan[] {
    return this.loans;
  }

  containerIds(): string[] {
    return [...this.entries.keys()];
  }

  /** Resolves once no plan is running or waiting. */
  async idle(): Promise<void> {
    while (this.busy || this.urgentWork.length > 0 || this.normalWork.length > 0) await sleep(5);
  }

  status(): ManagerStatus {
    const now = performance.now();
    const snap = this.snapshotNow();
    return {
      tenant: this.tenant,
      pid: process.pid,
      uptimeMs: Math.round(now - this.startedAt),
      sharing: this.policy.pools.sharing,
      containers: [...this.entries.values()].map((e) => ({
        id: e.id,
        function: e.function,
        workflow: e.workflow,
        pool: classifyContainer(this.stateOf(e), snap.nowMs, this.policy),
        running: e.running,
        queued: e.queue.length,
        initialLimitBytes: e.initialLimitBytes,
        limitBytes: e.limitBytes,
        usageBytes: e.reading?.usageBytes ?? 0,
        storeMemoryBytes: e.reading?.memoryBytes ?? 0,
        storeDiskBytes: e.reading?.diskBytes ?? 0,
        mountConnected: e.session?.open ?? false,
        nonHarvestableUntilMs: e.nonHarvestableUntilMs,
        profile: e.profile,
      })),
      loans: this.loans.map((l) => ({ ...l })),
      plans: { ...this.counts },
      mounts: this.server ? [...this.server.sessions].filter((s) => s.role === 'mount').length : 0,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const e of this.entries.values()) for (const job of e.queue.splice(0)) job.reject(new ManagerError('E_CLOSED', 'manager closed'));
    await this.server?.close();
  }

  /**
   * Stops dead, as a killed process would: the link goes, nothing is rolled back, the next step of a
   * running plan is never taken. For crash tests and for a node shutting down hard.
   */
  async crash(): Promise<void> {
    await this.close();
  }

  // --- queue --------------------------------------------------------------------------------------

  private async runQueue(e: Entry): Promise<void> {
    // The loans open before the first invocation runs: a function that needs its memory at once
    // has it from its first instruction (the thesis' order; measured cost: the plan's Docker
    // updates, tens of ms each, sit on that invocation's latency).
    await this.schedule(false, async () => {
      await this.decideAndRun('start', (snap) => ({ plan: planOnStart(snap, e.id, this.policy), extra: null }));
    }).catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'start plan failed'));
    while (e.queue.length > 0 && !this.closed) {
      const job = e.queue[0]!;
      try {
        const result = await e.invoker!.invoke(job.args, job.options);
        this.metrics.invocations.inc({ outcome: result.exitCode === 0 ? 'ok' : 'failed' });
        job.resolve(result);
      } catch (err) {
        this.metrics.invocations.inc({ outcome: 'error' });
        job.reject(err);
      }
      e.queue.shift();
    }
    e.running = false;
    if (this.closed || !this.entries.has(e.id)) return;
    await this.schedule(false, async () => {
      // A new job may have made it running again while this waited: then its loans stay.
      if (e.running) return;
      await this.decideAndRun('drain', (snap) => ({ plan: planOnDrain(snap, e.id, this.policy), extra: null }));
    }).catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'drain plan failed'));
  }

  // --- plans --------------------------------------------------------------------------------------

  /** One plan at a time; urgent work (alarms) goes before any waiting normal work. */
  private schedule<T>(urgent: boolean, work: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const run = async (): Promise<void> => {
        try {
          resolve(await work());
        } catch (err) {
          reject(err);
        }
      };
      (urgent ? this.urgentWork : this.normalWork).push(run);
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    const next = this.urgentWork.shift() ?? this.normalWork.shift();
    if (!next) return;
    this.busy = true;
    try {
      await next();
    } finally {
      this.busy = false;
      void this.pump();
    }
  }

  /** Decides (timed, Docker excluded) and runs a plan; the caller holds the plan slot. */
  private async decideAndRun<X>(
    event: string,
    decide: (snap: TenantSnapshot) => { plan: LendingPlan; extra: X },
    onStep?: (step: LendingStep) => void,
  ): Promise<{ outcome: PlanOutcome; extra: X }> {
    if (this.closed) throw new ManagerError('E_CLOSED', 'manager closed');
    await this.refreshUsage();
    const t0 = process.hrtime.bigint();
    const { plan, extra } = decide(this.snapshotNow());
    const decisionMs = Number(process.hrtime.bigint() - t0) / 1e6;
    this.metrics.decisionSeconds.observe({ event }, decisionMs / 1000);
    const outcome = await this.execute(plan, decisionMs, onStep);
    return { outcome, extra };
  }

  /**
   * Runs the steps in order. On the first failure the executed prefix is undone (policy `undoSteps`);
   * the loan table changes only when every step ran. If even the undo fails, the view takes the
   * kernel's limits as they are, so view and kernel never disagree, and the failure is counted.
   */
  private async execute(plan: LendingPlan, decisionMs: number, onStep?: (step: LendingStep) => void): Promise<PlanOutcome> {
    const executed: LendingStep[] = [];
    for (let i = 0; i < plan.steps.length; i++) {
      const step = plan.steps[i]!;
      try {
        let announced = false;
        await this.runStep(step, plan.steps[i + 1], (s) => {
          announced = true;
          onStep?.(s);
        });
        executed.push(step);
        if (!announced) onStep?.(step);
      } catch (err) {
        if (err instanceof Closed) throw new ManagerError('E_CLOSED', 'manager closed mid-plan');
        const code = (err as { code?: string }).code ?? 'E_LIMIT_WRITE';
        this.metrics.steps.inc({ kind: step.kind, outcome: 'failed' });
        this.log.warn({ trigger: plan.trigger, step, code, err: errorMessage(err) }, 'plan step failed; rolling back');
        await this.rollback(executed);
        this.metrics.plans.inc({ trigger: plan.trigger, outcome: 'rolled-back' });
        this.counts.rolledBack += 1;
        return { plan, ok: false, failure: { step, code, message: errorMessage(err) }, decisionMs };
      }
    }
    this.loans = [...plan.loansAfter];
    this.metrics.loanedBytes.set(this.loans.reduce((s, l) => s + l.bytes, 0));
    this.metrics.plans.inc({ trigger: plan.trigger, outcome: 'ok' });
    this.counts.executed += 1;
    if (plan.pendingReturns.length > 0) this.scheduleRetry(plan);
    return { plan, ok: true, decisionMs };
  }

  private async rollback(executed: readonly LendingStep[]): Promise<void> {
    const undo = undoSteps(executed, this.policy);
    for (let i = 0; i < undo.length; i++) {
      try {
        await this.runStep(undo[i]!, undo[i + 1]);
      } catch (err) {
        if (err instanceof Closed) throw new ManagerError('E_CLOSED', 'manager closed mid-rollback');
        this.counts.inconsistent += 1;
        this.log.error({ step: undo[i], err: errorMessage(err) }, 'rollback step failed; adopting the kernel limits');
        await this.adoptKernelLimits();
        return;
      }
    }
  }

  private async adoptKernelLimits(): Promise<void> {
    for (const e of this.entries.values()) {
      try {
        this.setLimit(e, await this.writer.read(e.id));
      } catch (err) {
        this.log.error({ container: e.id.slice(0, 12), err: errorMessage(err) }, 'cannot read limit');
      }
    }
  }

  private scheduleRetry(plan: LendingPlan): void {
    for (const p of plan.pendingReturns) {
      if (p.action === 'alarm') this.log.error({ pending: p }, 'a loan could not be returned after the last attempt');
    }
    if (this.retryTimer || plan.pendingReturns.every((p) => p.action === 'alarm')) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed) return;
      void this.schedule(false, async () => {
        await this.decideAndRun('retry', (snap) => ({ plan: planRetryReturns(snap, this.policy), extra: null }));
      }).catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'retry plan failed'));
    }, this.options.retryReturnsAfterMs ?? 1_000);
    this.retryTimer.unref();
  }

  private async runStep(step: LendingStep, next: LendingStep | undefined, onRaised?: (step: LendingStep) => void): Promise<void> {
    if (this.closed) throw new Closed();
    const e = this.entry(step.container);
    const t0 = performance.now();
    if (step.kind === 'evict') {
      await this.evict(e, step.usageAtMostBytes, next?.kind === 'lowerLimit' && next.container === e.id ? next.toBytes : undefined);
    } else {
      if (e.limitBytes !== step.fromBytes) {
        throw new ManagerError('E_UNSAFE_STEP', `${step.kind} ${e.id.slice(0, 12)}: limit is ${e.limitBytes}, the plan expected ${step.fromBytes}`);
      }
      if (step.kind === 'raiseLimit' && this.writer.raiseNow) {
        // The kernel first (a stalled task resumes now), the engine's record right after.
        await this.writer.raiseNow(e.id, step.toBytes);
        this.setLimit(e, step.toBytes);
        onRaised?.(step);
      }
      await this.writer.write(e.id, step.toBytes);
      if (this.closed) throw new Closed();
      const actual = await this.writer.read(e.id);
      if (actual !== step.toBytes) {
        this.setLimit(e, actual);
        throw new ManagerError('E_LIMIT_MISMATCH', `${e.id.slice(0, 12)}: asked for ${step.toBytes}, the cgroup says ${actual}`);
      }
      this.setLimit(e, step.toBytes);
    }
    this.metrics.steps.inc({ kind: step.kind, outcome: 'ok' });
    this.metrics.stepSeconds.observe({ kind: step.kind }, (performance.now() - t0) / 1000);
  }

  private setLimit(e: Entry, limit: number): void {
    const changed = e.limitBytes !== limit;
    e.limitBytes = limit;
    this.metrics.limitBytes.set({ container: e.id.slice(0, 12) }, limit);
    if (changed || e.session) this.sendBudget(e);
  }

  private sendBudget(e: Entry): void {
    if (!e.session?.open) return;
    try {
      e.session.send({ type: 'budget', containerId: e.id, limitBytes: e.limitBytes });
    } catch (err) {
      this.log.warn({ container: e.id.slice(0, 12), err: errorMessage(err) }, 'cannot send budget');
    }
  }

  /** Asks the container's mount to evict; without a mount there is no store to evict from. */
  private async evict(e: Entry, usageAtMostBytes: number, targetLimitBytes: number | undefined): Promise<void> {
    if (!e.session?.open) return;
    // Before a lower the mount is always asked, even when rss + shmem already fit: the kernel's
    // limit also counts the container's dirty page cache of the disk tier, which v1 cannot reclaim
    // until the mount writes it back.
    if (targetLimitBytes === undefined && (!e.reading || e.reading.usageBytes <= usageAtMostBytes)) return;
    const requestId = randomUUID();
    // A spill of a few hundred MiB behind a promotion in flight takes seconds on a loaded node
    // (measured in the sharing bench); until the mount answers, the plan holds, it does not fail.
    const timeoutMs = this.options.evictTimeoutMs ?? 10_000;
    const usage = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.shrinkWaiters.delete(requestId);
        reject(new ManagerError('E_EVICT_TIMEOUT', `mount of ${e.id.slice(0, 12)} did not answer an eviction within ${timeoutMs} ms`));
      }, timeoutMs);
      this.shrinkWaiters.set(requestId, (u) => {
        clearTimeout(timer);
        resolve(u);
      });
      try {
        if (targetLimitBytes !== undefined) e.session!.send({ type: 'shrink', containerId: e.id, targetLimitBytes, requestId });
        else e.session!.send({ type: 'evict', containerId: e.id, bytes: Math.max(0, (e.reading?.usageBytes ?? 0) - usageAtMostBytes), requestId });
      } catch (err) {
        clearTimeout(timer);
        this.shrinkWaiters.delete(requestId);
        reject(err);
      }
    });
    const before = e.reading ?? { usageBytes: usage, memoryBytes: 0, diskBytes: 0 };
    const freed = Math.max(0, before.usageBytes - usage);
    e.reading = { ...before, usageBytes: usage, memoryBytes: Math.max(0, before.memoryBytes - freed), diskBytes: before.diskBytes + freed };
  }

  // --- reconciliation -----------------------------------------------------------------------------

  /**
   * After a restart: nothing runs and the loan table is lost, so the policy's view is every limit at
   * its initial value. Borrowers come down first (evict → lower), lenders go back up only by what was
   * freed; whatever a borrower's own memory holds back stays as a pending loan to retry.
   */
  async reconcile(): Promise<void> {
    await this.schedule(false, async () => {
      await this.refreshUsage();
      const above = [...this.entries.values()].filter((e) => e.limitBytes > e.initialLimitBytes).sort(byId);
      for (const e of above) {
        const target = e.initialLimitBytes;
        const steps: LendingStep[] = [
          { kind: 'evict', container: e.id, usageAtMostBytes: target - headroomBytes(target, this.policy) },
          { kind: 'lowerLimit', container: e.id, fromBytes: e.limitBytes, toBytes: target },
        ];
        try {
          await this.runStep(steps[0]!, steps[1]);
          await this.runStep(steps[1]!, undefined);
        } catch (err) {
          if (err instanceof Closed) throw new ManagerError('E_CLOSED', 'manager closed mid-reconcile');
          this.log.warn({ container: e.id.slice(0, 12), err: errorMessage(err) }, 'reconcile: borrower cannot come down yet');
        }
      }
      const all = [...this.entries.values()];
      let freed = all.reduce((s, e) => s + e.initialLimitBytes - e.limitBytes, 0);
      for (const e of all.filter((x) => x.limitBytes < x.initialLimitBytes).sort(byId)) {
        const raise = Math.min(e.initialLimitBytes - e.limitBytes, Math.max(0, freed));
        if (raise <= 0) continue;
        try {
          await this.runStep({ kind: 'raiseLimit', container: e.id, fromBytes: e.limitBytes, toBytes: e.limitBytes + raise }, undefined);
          freed -= raise;
        } catch (err) {
          if (err instanceof Closed) throw new ManagerError('E_CLOSED', 'manager closed mid-reconcile');
          this.log.error({ container: e.id.slice(0, 12), err: errorMessage(err) }, 'reconcile: cannot raise a lender');
        }
      }
      this.loans = pairLoans(all);
      this.metrics.loanedBytes.set(this.loans.reduce((s, l) => s + l.bytes, 0));
      if (this.loans.length > 0) {
        this.scheduleRetry({ trigger: 'retry', container: null, steps: [], opened: [], returned: [], loansAfter: this.loans, pendingReturns: this.loans.map((l) => ({ lender: l.lender, borrower: l.borrower, outstandingBytes: l.bytes, attempts: 1, action: 'retry' as const })) });
      }
    });
  }

  // --- link ---------------------------------------------------------------------------------------

  private async onLinkMessage(session: LinkSession<ToMountMessage>, msg: ToManagerMessage): Promise<void> {
    this.metrics.linkMessages.inc({ type: msg.type });
    switch (msg.type) {
      case 'status':
        session.send({ type: 'status-reply', requestId: msg.requestId, status: this.status() });
        return;
      case 'metrics':
        session.send({ type: 'metrics-reply', requestId: msg.requestId, contentType: this.metrics.registry.contentType, text: await this.metrics.registry.metrics() });
        return;
      case 'usage': {
        const e = this.entryForMount(session, msg.containerId);
        const fresh = e.session !== session;
        e.session = session;
        e.reading = { usageBytes: msg.usageBytes, memoryBytes: msg.memoryBytes, diskBytes: msg.diskBytes };
        // A mount that (re)joined, or one that believes another limit, learns the real one.
        if (fresh || msg.limitBytes !== e.limitBytes) this.sendBudget(e);
        return;
      }
      case 'stats': {
        const e = this.entryForMount(session, msg.containerId);
        e.stats = { inodes: msg.inodes, spills: msg.spills, promotions: msg.promotions };
        return;
      }
      case 'shrink-ready': {
        const e = this.entryForMount(session, msg.containerId);
        const waiter = this.shrinkWaiters.get(msg.requestId);
        if (!waiter) throw new ManagerError('E_BAD_INPUT', `no eviction ${msg.requestId} is pending for ${e.id.slice(0, 12)}`);
        this.shrinkWaiters.delete(msg.requestId);
        waiter(msg.usageBytes);
        return;
      }
      case 'alarm': {
        const e = this.entryForMount(session, msg.containerId);
        e.session = session;
        await this.alarm(e.id, msg.shortfallBytes, msg.oomPaused);
        return;
      }
    }
  }

  /** Mounts speak only for containers of this manager (its tenant); a container has one mount. */
  private entryForMount(session: LinkSession<ToMountMessage>, id: string): Entry {
    if (session.role !== 'mount') throw new ManagerError('E_FORBIDDEN', `a ${session.role} peer cannot report for containers`);
    const e = this.entries.get(id);
    if (!e) throw new ManagerError('E_UNKNOWN_CONTAINER', `container ${id.slice(0, 12)} is not managed by tenant ${this.tenant}'s manager`);
    if (e.session && e.session !== session && e.session.open) {
      throw new ManagerError('E_FORBIDDEN', `container ${id.slice(0, 12)} is served by another mount peer`);
    }
    return e;
  }

  // --- state --------------------------------------------------------------------------------------

  private entry(id: string): Entry {
    const e = this.entries.get(id);
    if (!e) throw new ManagerError('E_UNKNOWN_CONTAINER', `container ${id.slice(0, 12)} is not managed by tenant ${this.tenant}'s manager`);
    return e;
  }

  private stateOf(e: Entry): ContainerState {
    return {
      id: e.id,
      tenant: this.tenant,
      function: e.function,
      workflow: e.workflow,
      limitBytes: e.limitBytes,
      initialLimitBytes: e.initialLimitBytes,
      profile: e.profile,
      running: e.running,
      usageBytes: e.reading?.usageBytes ?? 0,
      storeMemoryBytes: e.reading?.memoryBytes ?? 0,
      nonHarvestableUntilMs: e.nonHarvestableUntilMs,
    };
  }

  private snapshotNow(): TenantSnapshot {
    return { nowMs: performance.now(), containers: [...this.entries.values()].map((e) => this.stateOf(e)), loans: this.loans };
  }

  /** Containers no mount reports for: their usage is the cgroup's own memory (rss + shmem), nothing evictable. */
  private async refreshUsage(): Promise<void> {
    await Promise.all(
      [...this.entries.values()]
        .filter((e) => !e.session?.open && e.cgroupPath)
        .map(async (e) => {
          try {
            const usageBytes = await readRssShmem(e.cgroupPath!);
            e.reading = { usageBytes, memoryBytes: 0, diskBytes: e.reading?.diskBytes ?? 0 };
          } catch (err) {
            this.log.debug({ container: e.id.slice(0, 12), err: errorMessage(err) }, 'cannot read usage');
          }
        }),
    );
  }
}

async function readRssShmem(cgroupPath: string): Promise<number> {
  const text = await readFile(path.join(cgroupPath, 'memory.stat'), 'utf8');
  const get = (key: string): number => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return get('total_rss') + get('total_shmem');
}

/** What is still above/below initial after reconciliation, as loans: largest first, deterministic. */
function pairLoans(entries: readonly Entry[]): Loan[] {
  const borrowers = entries.filter((e) => e.limitBytes > e.initialLimitBytes).map((e) => ({ id: e.id, left: e.limitBytes - e.initialLimitBytes })).sort((a, b) => b.left - a.left || (a.id < b.id ? -1 : 1));
  const lenders = entries.filter((e) => e.limitBytes < e.initialLimitBytes).map((e) => ({ id: e.id, left: e.initialLimitBytes - e.limitBytes })).sort((a, b) => b.left - a.left || (a.id < b.id ? -1 : 1));
  const loans: Loan[] = [];
  for (const b of borrowers) {
    for (const l of lenders) {
      if (b.left <= 0) break;
      const bytes = Math.min(b.left, l.left);
      if (bytes <= 0) continue;
      loans.push({ lender: l.id, borrower: b.id, bytes, returnAttempts: 1 });
      b.left -= bytes;
      l.left -= bytes;
    }
  }
  return loans;
}

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
