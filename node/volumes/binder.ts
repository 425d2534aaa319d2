import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { memoryCgroupOfPid } from '../../engine/index';
import type { VolumeDriver } from './driver';
import { errorMessage } from './errors';

interface DockerEvent {
  Type?: string;
  Action?: string;
  id?: string;
  Actor?: { ID?: string };
}

/**
 * Follows Docker's container events for the driver: at `start` the container's memory cgroup
 * exists, so each of its volumes on this driver is bound to it (and again after a restart); at
 * `die` its loans are settled. The stream is reopened when dockerd drops it.
 */
export class DockerEventBinder {
  private stream: NodeJS.ReadableStream | undefined;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private inFlight = new Set<Promise<void>>();

  private constructor(
    private readonly docker: Docker,
    private readonly driver: VolumeDriver,
    private readonly log: Logger,
  ) {}

  static async start(docker: Docker, driver: VolumeDriver, log: Logger): Promise<DockerEventBinder> {
    const b = new DockerEventBinder(docker, driver, log);
    await b.open();
    await b.forgetMountsOfGoneContainers();
    await b.bindRunning();
    return b;
  }

  /**
   * After a node restart the table says which volumes were mounted; a container that stopped while
   * no driver answered never got its unmount through, and its volume must not stay "in use".
   * Kept: volumes a running, paused, restarting or just-created (mounting now) container uses.
   */
  private async forgetMountsOfGoneContainers(): Promise<void> {
    const mounted = this.driver.list().filter((v) => v.mounted).map((v) => v.name);
    if (mounted.length === 0) return;
    const all = await this.docker.listContainers({ all: true, filters: JSON.stringify({ volume: mounted }) });
    const live = new Set<string>();
    for (const c of all) {
      if (!['running', 'paused', 'restarting', 'created'].includes(c.State)) continue;
      for (const m of c.Mounts ?? []) if (m.Name) live.add(m.Name);
    }
    for (const name of mounted) if (!live.has(name)) await this.driver.forgetMount(name);
  }

  private async open(): Promise<void> {
    const stream = (await this.docker.getEvents({ filters: JSON.stringify({ type: ['container'], event: ['start', 'die'] }) })) as NodeJS.ReadableStream;
    this.stream = stream;
    let pending = '';
    stream.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (line) this.onLine(line);
      }
    });
    const reopen = () => {
      if (this.closed || this.stream !== stream) return;
      this.stream = undefined;
      this.log.warn('Docker event stream ended: reopening');
      this.retry = setTimeout(() => {
        this.open().then(() => this.bindRunning(), (e: unknown) => {
          this.log.error({ err: errorMessage(e) }, 'cannot reopen the Docker event stream');
          reopen();
        });
      }, 1000);
    };
    stream.on('end', reopen);
    stream.on('error', reopen);
  }

  private onLine(line: string): void {
    let e: DockerEvent;
    try {
      e = JSON.parse(line) as DockerEvent;
    } catch {
      return;
    }
    const id = e.Actor?.ID ?? e.id;
    if (e.Type !== 'container' || !id) return;
    if (e.Action === 'start') this.track(this.bindContainer(id));
    else if (e.Action === 'die') this.driver.containerDied(id);
  }

  /** Containers already running when the driver (re)started or the stream came back. */
  private async bindRunning(): Promise<void> {
    const mounted = this.driver.list().filter((v) => v.mounted).map((v) => v.name);
    if (mounted.length === 0) return;
    const running = await this.docker.listContainers({ filters: JSON.stringify({ volume: mounted }) }).catch(() => []);
    for (const c of running) this.track(this.bindContainer(c.Id));
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private async bindContainer(id: string): Promise<void> {
    try {
      const info = await this.docker.getContainer(id).inspect();
      const volumes = (info.Mounts ?? []).filter((m) => m.Type === 'volume' && m.Driver === this.driver.name && m.Name);
      if (volumes.length === 0) return;
      const pid = info.State?.Pid ?? 0;
      if (!info.State?.Running || pid <= 0) return; // already gone again
      const cgroup = await memoryCgroupOfPid(pid);
      const started = { id: info.Id, name: info.Name.replace(/^\//, ''), pid, memoryLimitBytes: info.HostConfig?.Memory ?? 0, cgroup };
      for (const m of volumes) await this.driver.bind(m.Name!, started);
    } catch (e) {
      this.log.error({ container: id.slice(0, 12), err: errorMessage(e) }, 'binding a volume to its container failed');
    }
  }

  /** Waits for bindings in flight (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    const s = this.stream as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
    this.stream = undefined;
    s?.destroy?.();
    await this.idle();
  }
}
