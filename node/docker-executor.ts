import { errorMessage } from '../errors/index';
import { Engine, getRecipe, isEngineError, profileFunction, readMemoryStat, SIZE_HINT_LABEL, type FunctionContainer, type TmpMode } from '../engine/index';
import { managerLabels, type TenantManager } from '../manager/index';
import { ExecutionError, type TaskExecutor } from '../agent/index';
import type { FunctionRef, InvocationOutcome, ProfileFigures, RunningTask } from '../link/index';

/** The profile the manager pools a container by, when the controller sent one. */
function profileOf(fn: FunctionRef): { peakMemoryBytes: number; largestFileBytes: number } | null {
  return fn.peakMemoryBytes !== undefined && fn.largestFileBytes !== undefined
    ? { peakMemoryBytes: fn.peakMemoryBytes, largestFileBytes: fn.largestFileBytes }
    : null;
}

/** Label on every container an agent starts: `ephemera.node=<name>`, so a restarted agent finds its orphans. */
export const NODE_LABEL = 'ephemera.node';

export class DockerTaskExecutor implements TaskExecutor {
  private readonly engine: Engine;
  private readonly node: string;
  private readonly labels: Record<string, string>;
  private readonly images = new Map<string, Promise<string>>();
  private readonly running = new Set<FunctionContainer>();
  private closed = false;

  /** `labels` are added to every container (tests use them to find what they made). */
  /** Each function container's /tmp: `{kind:'bind'}` with an Ephemera provider on the engine gives it an Ephemera mount. */
  private readonly tmp: TmpMode;

  /**
   * With tenant managers, each invocation's container joins its tenant's pool: loans open while it
   * runs and close when its queue drains (thesis 3.3); without, containers keep their own limit.
   */
  private readonly managers: ((tenant: string) => Promise<TenantManager>) | undefined;

  constructor(
    engine: Engine,
    node: string,
    labels: Record<string, string> = {},
    tmp: TmpMode = { kind: 'overlay' },
    managers?: (tenant: string) => Promise<TenantManager>,
  ) {
    this.engine = engine;
    this.node = node;
    this.labels = { ...labels, [NODE_LABEL]: node };
    this.tmp = tmp;
    this.managers = managers;
  }

  /** A recipe name (`busybox`, `function`) is built or reused once per agent; other references pass through. */
  private image(ref: string): Promise<string> {
    let p = this.images.get(ref);
    if (!p) {
      const recipe = getRecipe(ref);
      p = recipe ? this.engine.ensureImage(recipe).then((r) => r.tag) : Promise.resolve(ref);
      p.catch(() => this.images.delete(ref));
      this.images.set(ref, p);
    }
    return p;
  }

  private spec(fn: FunctionRef, image: string, extra: Record<string, string>) {
    return {
      image,
      command: fn.command,
      memoryMiB: Math.max(6, Math.ceil(fn.limitBytes / (1024 * 1024))),
      tenant: fn.tenant,
      function: fn.function,
      tmp: this.tmp,
      labels: {
        ...this.labels,
        ...(fn.largestFileBytes !== undefined ? { [SIZE_HINT_LABEL]: String(fn.largestFileBytes) } : {}),
        // The manager rebuilds its pool from labels after a restart.
        ...(this.managers ? managerLabels(fn.limitBytes, profileOf(fn)) : {}),
        ...extra,
      },
    };
  }

  async run(task: RunningTask, fn: FunctionRef, args: string[], options: { timeoutMs: number }): Promise<InvocationOutcome> {
    if (this.closed) throw new ExecutionError('E_CLOSED', 'the agent is shutting down');
    const image = await this.image(fn.image);
    // The tenant's manager first: the container's /tmp joins its link as the container starts.
    const manager = this.managers ? await this.managers(fn.tenant) : undefined;
    let fc: FunctionContainer;
    try {
      fc = await this.engine.start(this.spec(fn, image, { 'ephemera.task': task.taskId }));
    } catch (err) {
      throw asExecutionError(err);
    }
    this.running.add(fc);
    try {
      let result;
      if (manager) {
        await manager.addContainer({
          id: fc.id,
          tenant: fn.tenant,
          function: fn.function,
          initialLimitBytes: fn.limitBytes,
          profile: profileOf(fn),
          invoker: fc,
          cgroupPath: fc.cgroupPath,
        });
        result = await manager.invoke(fc.id, args, { timeoutMs: options.timeoutMs });
      } else {
        result = await fc.invoke(args, { timeoutMs: options.timeoutMs });
      }
      return {
        exitCode: result.exitCode,
        stdout: result.stdout,
        stderr: result.stderr,
        execMs: result.wallMs,
        startMs: fc.timings.readyMs,
        oomKills: result.oomKills,
      };
    } catch (err) {
      throw asExecutionError(err);
    } finally {
      this.running.delete(fc);
      if (manager) await manager.terminate(fc.id).catch(() => undefined);
      await fc.remove().catch(() => undefined);
    }
  }

  async profile(fn: FunctionRef, inputs: string[][], options: { timeoutMs: number }): Promise<ProfileFigures> {
    const image = await this.image(fn.image);
    try {
      const { profile } = await profileFunction(this.engine, this.spec(fn, image, { 'ephemera.profiling': '1' }), inputs, { timeoutMs: options.timeoutMs });
      return { peakMemoryBytes: profile.peakRssBytes, largestFileBytes: profile.largestFileBytes };
    } catch (err) {
      throw asExecutionError(err);
    }
  }

  /**
   * Memory the node's function containers use now (rss + page cache incl. /tmp files, from each
   * container's memory cgroup): the "used" column next to N_alloc and N_req.
   */
  async usedBytes(): Promise<number> {
    const each = await Promise.all(
      [...this.running].map(async (fc) => {
        try {
          const stat = await readMemoryStat(fc.cgroupPath);
          return (stat.get('total_rss') ?? stat.get('rss') ?? 0) + (stat.get('total_cache') ?? stat.get('cache') ?? 0);
        } catch {
          return 0; // the container finished between listing and reading
        }
      }),
    );
    return each.reduce((a, b) => a + b, 0);
  }

  recover(): Promise<number> {
    return this.engine.removeManaged({ [NODE_LABEL]: this.node });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.running].map((fc) => fc.remove().catch(() => undefined)));
  }
}

function asExecutionError(err: unknown): ExecutionError {
  if (err instanceof ExecutionError) return err;
  if (isEngineError(err)) return new ExecutionError(err.code, err.message, err);
  return new ExecutionError('E_EXECUTION', errorMessage(err), err);
}
