import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { readFile } from 'node:fs/promises';
import Docker from 'dockerode';
import { EngineError, dockerStatus, errorMessage, isEngineError } from './errors';
import { containerLabels, MANAGED_LABEL, parseFunctionSpec, type FunctionSpec, type FunctionSpecInput } from './spec';
import type { TmpProvider } from './tmp-provider';
import { cgroupExists, findMemoryMount, guessContainerCgroups, memoryCgroupOfPid, readOomKills, removeLeftoverCgroup } from './cgroup';
import { killProcessTree } from './proctree';
import { ensureImage, getRecipe, resolveImageRef, type ImageBuildOptions, type ImageBuildResult, type ImageRecipe } from './images';
import { engineLog } from './log';

export interface EngineOptions {
  /** Docker socket; `DOCKER_HOST`/the default socket when absent. */
  socketPath?: string;
  /** Creates, attaches and removes the /tmp of `bind` containers that have no `hostPath`. */
  tmpProvider?: TmpProvider;
}

export interface StartOptions {
  /** Passed to the tmp provider: every file on the disk tier (the profiling run). */
  profiling?: boolean;
}

export interface InvokeOptions {
  /** Wall-clock limit; on expiry the invocation's process tree is killed and `E_TIMEOUT` thrown. */
  timeoutMs?: number;
  /** Extra environment for this invocation only. */
  env?: Record<string, string>;
}

export interface InvocationResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  wallMs: number;
  /** Kernel OOM kills in the container's memory cgroup during this invocation. */
  oomKills: number;
}

export interface StartTimings {
  /** `POST /containers/create` (includes the tmp provider's create). */
  createMs: number;
  /** `start` until the init process and its memory cgroup are known (includes the provider's attach). */
  startMs: number;
  /** create → a probe exec answered: the container can serve its first invocation. */
  readyMs: number;
}

/**
 * PID 1 of every function container: a shell that only reaps. Invocations are `docker exec`s;
 * orphans they leave are re-parented here, and `wait` reaps them so no zombies pile up.
 */
const KEEPALIVE = 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done';

const NO_COMMAND = /executable file not found|no such file or directory|permission denied/i;

export class Engine {
  readonly docker: Docker;
  readonly tmpProvider: TmpProvider | undefined;

  private constructor(docker: Docker, options: EngineOptions) {
    this.docker = docker;
    this.tmpProvider = options.tmpProvider;
  }

  /** Connects and pings; `E_NO_DOCKER` when no daemon answers. */
  static async connect(options: EngineOptions = {}): Promise<Engine> {
    const docker = options.socketPath ? new Docker({ socketPath: options.socketPath }) : new Docker();
    const engine = new Engine(docker, options);
    await engine.ping();
    return engine;
  }

  async ping(): Promise<void> {
    try {
      await withTimeout(this.docker.ping(), 5000, 'docker ping');
    } catch (err) {
      throw new EngineError(
        'E_NO_DOCKER',
        `no Docker daemon answers (${errorMessage(err)}); start one with scripts/setup.sh or \`dockerd &\``,
        undefined,
        err,
      );
    }
  }

  ensureImage(recipeOrName: ImageRecipe | string, options?: ImageBuildOptions): Promise<ImageBuildResult> {
    const recipe = typeof recipeOrName === 'string' ? getRecipe(recipeOrName) : recipeOrName;
    if (!recipe) throw new EngineError('E_NO_IMAGE', `no image recipe named ${String(recipeOrName)}`);
    return ensureImage(this.docker, recipe, options);
  }

  /** Creates and starts a warm container for `spec`; invocations then reuse it (and its /tmp). */
  async start(input: FunctionSpecInput, options: StartOptions = {}): Promise<FunctionContainer> {
    const spec = parseFunctionSpec(input);
    const image = resolveImageRef(spec.image);
    const useProvider = spec.tmp.kind === 'bind' && spec.tmp.hostPath === undefined;
    if (useProvider && !this.tmpProvider) {
      throw new EngineError('E_BAD_SPEC', 'tmp.kind "bind" without hostPath needs an engine tmpProvider');
    }
    const name = containerName(spec);
    const t0 = performance.now();
    let hostTmpPath: string | undefined;
    let container: Docker.Container | undefined;
    const undo = async () => {
      if (container) await container.remove({ force: true }).catch(() => undefined);
      if (useProvider) await this.tmpProvider?.remove(name).catch(() => undefined);
    };
    try {
      if (useProvider) {
        hostTmpPath = (await this.tmpProvider!.create(name, spec, { profiling: options.profiling ?? false })).hostPath;
      } else if (spec.tmp.kind === 'bind') {
        hostTmpPath = spec.tmp.hostPath;
      }
      container = await this.createContainer(name, image, spec, hostTmpPath);
      const createMs = performance.now() - t0;
      await startContainer(container, hostTmpPath);
      const info = await container.inspect();
      const cgroupPath = await memoryCgroupOfPid(info.State.Pid);
      if (useProvider) await this.tmpProvider!.attach(name, cgroupPath);
      const startMs = performance.now() - t0 - createMs;
      const init = await readProcStart(info.State.Pid);
      const fc = new FunctionContainer(this, container, name, spec, cgroupPath, hostTmpPath, useProvider, { pid: info.State.Pid, startTime: init?.startTime ?? '' });
      await fc.probe();
      fc.timings = { createMs: round(createMs), startMs: round(startMs), readyMs: round(performance.now() - t0) };
      engineLog.debug({ name, timings: fc.timings }, 'container ready');
      return fc;
    } catch (err) {
      await undo();
      throw err;
    }
  }

  /** A cold invocation: a new container, one invocation, removal. */
  async invokeCold(
    spec: FunctionSpecInput,
    args: string[] = [],
    options: InvokeOptions = {},
  ): Promise<InvocationResult & { timings: StartTimings }> {
    const fc = await this.start(spec);
    try {
      const result = await fc.invoke(args, options);
      return { ...result, timings: fc.timings };
    } finally {
      await fc.remove();
    }
  }

  /** Managed containers, optionally narrowed by extra labels (`key=value`). */
  async listManaged(labels: Record<string, string> = {}): Promise<Docker.ContainerInfo[]> {
    const label = [`${MANAGED_LABEL}=1`, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)];
    return this.docker.listContainers({ all: true, filters: JSON.stringify({ label }) });
  }

  /** Force-removes managed containers matching `labels` (test teardown, crash recovery). */
  async removeManaged(labels: Record<string, string> = {}): Promise<number> {
    const found = await this.listManaged(labels);
    await Promise.all(found.map((c) => this.docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined)));
    return found.length;
  }

  private async createContainer(name: string, image: string, spec: FunctionSpec, hostTmpPath: string | undefined) {
    const memoryBytes = spec.memoryMiB * 1024 * 1024;
    const hostConfig: Docker.HostConfig = {
      Memory: memoryBytes,
      // Equal to Memory: no swap, so the limit is the limit.
      MemorySwap: memoryBytes,
      Privileged: false,
      CapDrop: ['ALL'],
      Devices: [],
      SecurityOpt: ['no-new-privileges'],
      NetworkMode: 'none',
      PidsLimit: 4096,
    };
    if (spec.tmp.kind === 'tmpfs') {
      const size = spec.tmp.sizeBytes === undefined ? '' : `,size=${spec.tmp.sizeBytes}`;
      hostConfig.Tmpfs = { '/tmp': `rw,exec,nosuid,nodev,mode=1777${size}` };
    } else if (spec.tmp.kind === 'bind') {
      hostConfig.Mounts = [
        { Type: 'bind', Source: hostTmpPath!, Target: '/tmp', ReadOnly: false, BindOptions: { Propagation: 'rslave' } },
      ];
    }
    try {
      return await this.docker.createContainer({
        name,
        Image: image,
        Entrypoint: ['/bin/sh', '-c', KEEPALIVE],
        Cmd: [],
        Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
        WorkingDir: spec.workdir,
        Labels: containerLabels(spec),
        HostConfig: hostConfig,
        NetworkDisabled: true,
      });
    } catch (err) {
      if (dockerStatus(err) === 404) {
        throw new EngineError('E_NO_IMAGE', `no image ${image} (build it with \`ephemera images build\`)`, { image }, err);
      }
      throw new EngineError('E_DOCKER', `creating container for ${image}: ${errorMessage(err)}`, { image }, err);
    }
  }
}

export class FunctionContainer {
  readonly engine: Engine;
  readonly container: Docker.Container;
  readonly name: string;
  readonly spec: FunctionSpec;
  /** The container's memory cgroup directory (v1), e.g. `/sys/fs/cgroup/memory/docker/<id>`. */
  readonly cgroupPath: string;
  /** Host directory behind /tmp for `bind` containers. */
  readonly hostTmpPath: string | undefined;
  timings: StartTimings = { createMs: 0, startMs: 0, readyMs: 0 };
  private readonly ownsProviderTmp: boolean;
  /** The container's PID 1 on the host, with its start time so a reused pid is not mistaken for it. */
  private readonly init: { pid: number; startTime: string };
  private removed = false;

  constructor(
    engine: Engine,
    container: Docker.Container,
    name: string,
    spec: FunctionSpec,
    cgroupPath: string,
    hostTmpPath: string | undefined,
    ownsProviderTmp: boolean,
    init: { pid: number; startTime: string },
  ) {
    this.init = init;
    this.engine = engine;
    this.container = container;
    this.name = name;
    this.spec = spec;
    this.cgroupPath = cgroupPath;
    this.hostTmpPath = hostTmpPath;
    this.ownsProviderTmp = ownsProviderTmp;
  }

  get id(): string {
    return this.container.id;
  }

  /** Runs `argv` in the container as it is (not the function command); used for probes and tools. */
  async exec(argv: string[], options: InvokeOptions & { user?: string } = {}): Promise<InvocationResult> {
    if (this.removed) throw new EngineError('E_REMOVED', `container ${this.name} was removed`);
    const oomBefore = await readOomKills(this.cgroupPath).catch(() => undefined);
    const started = performance.now();
    let exec: Docker.Exec;
    try {
      exec = await this.container.exec({
        Cmd: argv,
        AttachStdout: true,
        AttachStderr: true,
        User: options.user ?? this.spec.user ?? '',
        Env: Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`),
      });
    } catch (err) {
      throw await this.diedOr(err, `exec ${argv[0]}`);
    }
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      const stream = (await exec.start({ hijack: true, stdin: false })) as NodeJS.ReadableStream & { destroy(): void };
      const out = new PassThrough();
      const err = new PassThrough();
      out.on('data', (d: Buffer) => stdout.push(d));
      err.on('data', (d: Buffer) => stderr.push(d));
      this.container.modem.demuxStream(stream, out, err);
      const ended = new Promise<void>((resolve) => {
        stream.on('end', resolve);
        stream.on('close', resolve);
        stream.on('error', () => resolve());
      });
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true;
          void this.killExec(exec).finally(() => {
            // A grandchild that escaped the tree may still hold the pipe: stop waiting for it.
            setTimeout(() => stream.destroy(), 2000).unref();
          });
        }, options.timeoutMs);
      }
      await ended;
    } catch (err) {
      throw await this.diedOr(err, `exec ${argv[0]}`);
    } finally {
      if (timer) clearTimeout(timer);
    }
    const wallMs = round(performance.now() - started);
    const exitCode = await this.exitCodeOf(exec);
    const oomAfter = await readOomKills(this.cgroupPath).catch(() => undefined);
    const result: InvocationResult = {
      stdout: Buffer.concat(stdout).toString('utf8'),
      stderr: Buffer.concat(stderr).toString('utf8'),
      exitCode: exitCode ?? -1,
      wallMs,
      oomKills: oomBefore !== undefined && oomAfter !== undefined ? oomAfter - oomBefore : 0,
    };
    if (timedOut) {
      throw new EngineError('E_TIMEOUT', `${argv.join(' ')} ran past ${options.timeoutMs} ms and was killed`, { result });
    }
    // dockerd marks the container stopped a moment after its init dies, and an exec killed along
    // with it reports a plain 137; the init process itself is the prompt witness.
    if (exitCode === undefined || !(await this.survived(exitCode))) {
      throw new EngineError('E_CONTAINER_DIED', `container ${this.name} died during ${argv[0]}`, { result });
    }
    // runc reports a failed exec of the binary itself as 126/127 with its message on the stream.
    if ((exitCode === 126 || exitCode === 127) && /OCI runtime exec failed|exec failed/.test(result.stdout + result.stderr) && NO_COMMAND.test(result.stdout + result.stderr)) {
      throw new EngineError('E_NO_COMMAND', `cannot run ${argv[0]} in ${this.spec.image}: ${(result.stdout + result.stderr).trim()}`, { result });
    }
    return result;
  }

  /** One invocation of the function: its command plus `args`. */
  invoke(args: string[] = [], options: InvokeOptions = {}): Promise<InvocationResult> {
    return this.exec([...this.spec.command, ...args], options);
  }

  /** An exec that must succeed: the container can serve invocations. */
  async probe(): Promise<void> {
    const res = await this.exec(['/bin/sh', '-c', ':'], { timeoutMs: 10_000, user: '0' });
    if (res.exitCode !== 0) throw new EngineError('E_DOCKER', `readiness probe failed in ${this.name}: ${res.stderr}`);
  }

  /**
   * Whether the container's PID 1 still lives (not exiting, not a zombie, not a reused pid). A
   * killed init first waits in do_exit for the rest of its PID namespace to die, neither zombie nor
   * gone while the exec it took down already reports its exit: PF_EXITING is the prompt witness.
   */
  async initAlive(): Promise<boolean> {
    const now = await readProcStart(this.init.pid);
    return now !== undefined && now.startTime === this.init.startTime && !now.exiting && now.state !== 'Z' && now.state !== 'X';
  }

  /**
   * Whether the container outlived an exec that ended with `exitCode`. A SIGKILLed exec (137) may
   * be the container's death reaching it first, so that case looks again after a short grace.
   */
  private async survived(exitCode: number): Promise<boolean> {
    const alive = async () => (await this.initAlive()) && (await this.isRunning());
    if (!(await alive())) return false;
    if (exitCode !== 137) return true;
    await sleep(KILLED_EXEC_GRACE_MS);
    return alive();
  }

  async isRunning(): Promise<boolean> {
    try {
      return (await this.container.inspect()).State.Running;
    } catch {
      return false;
    }
  }

  /** Removes the container, then its /tmp (provider); idempotent. */
  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    try {
      await this.container.remove({ force: true });
    } catch (err) {
      if (dockerStatus(err) !== 404) throw new EngineError('E_DOCKER', `removing ${this.name}: ${errorMessage(err)}`, undefined, err);
    }
    if (this.ownsProviderTmp) {
      await this.engine.tmpProvider?.remove(this.name);
      await removeLeftoverCgroup(this.cgroupPath);
    }
  }

  /** Whether any trace of the container is left: the container itself or its memory cgroup. */
  async leftovers(): Promise<string[]> {
    const left: string[] = [];
    try {
      await this.container.inspect();
      left.push(`container ${this.name}`);
    } catch (err) {
      if (dockerStatus(err) !== 404) throw err;
    }
    const mount = await findMemoryMount();
    for (const p of new Set([this.cgroupPath, ...guessContainerCgroups(mount, this.id)])) {
      if (cgroupExists(p)) left.push(`cgroup ${p}`);
    }
    return left;
  }

  private async killExec(exec: Docker.Exec): Promise<void> {
    try {
      const info = await exec.inspect();
      if (info.Running && info.Pid > 0) await killProcessTree(info.Pid);
    } catch (err) {
      engineLog.warn({ name: this.name, err: errorMessage(err) }, 'killing a timed-out invocation failed');
    }
  }

  /** The exec's exit code; undefined when it never finished (its container died under it). */
  private async exitCodeOf(exec: Docker.Exec): Promise<number | undefined> {
    // The stream can end a moment before dockerd records the exit.
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        const info = await exec.inspect();
        if (!info.Running && info.ExitCode !== null) return info.ExitCode;
      } catch {
        return undefined;
      }
      if (!(await this.isRunning())) return undefined;
      await sleep(20);
    }
    return undefined;
  }

  private async diedOr(err: unknown, what: string): Promise<EngineError> {
    if (isEngineError(err)) return err;
    if (!(await this.isRunning())) return new EngineError('E_CONTAINER_DIED', `container ${this.name} is not running (${what})`, undefined, err);
    return new EngineError('E_DOCKER', `${what} in ${this.name}: ${errorMessage(err)}`, undefined, err);
  }
}

async function startContainer(container: Docker.Container, hostTmpPath: string | undefined): Promise<void> {
  try {
    await container.start();
  } catch (err) {
    const message = errorMessage(err);
    if (/not a shared or slave mount/.test(message)) {
      // rslave is what lets a daemon's remount reach a running container; we do not quietly drop it.
      throw new EngineError(
        'E_BAD_SPEC',
        `the /tmp bind source ${hostTmpPath} must sit on a shared mount (e.g. \`mount --bind D D && mount --make-shared D\` on a parent D)`,
        { hostTmpPath },
        err,
      );
    }
    throw new EngineError('E_DOCKER', `starting container: ${message}`, undefined, err);
  }
}

/** How long a SIGKILLed exec waits before its container is judged to have survived it. */
const KILLED_EXEC_GRACE_MS = 150;

/** PF_EXITING in /proc/PID/stat's flags: the task has entered do_exit (set before it becomes a zombie). */
const PF_EXITING = 0x4;

async function readProcStart(pid: number): Promise<{ state: string; startTime: string; exiting: boolean } | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after comm: state is the 3rd field of stat, flags the 9th, starttime the 22nd.
    return { state: fields[0] ?? '', startTime: fields[19] ?? '', exiting: (Number(fields[6]) & PF_EXITING) !== 0 };
  } catch {
    return undefined;
  }
}

function containerName(spec: FunctionSpec): string {
  const clean = (s: string) => s.replace(/[^a-zA-Z0-9_.-]/g, '-').slice(0, 40);
  return `eph-${clean(spec.tenant)}-${clean(spec.function)}-${randomBytes(4).toString('hex')}`;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
