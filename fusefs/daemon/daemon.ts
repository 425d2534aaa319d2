import { ManagerLinks } from './manager-link';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Logger } from 'pino';
import { DEFAULT_POLICY_CONFIG, loadPolicyConfig, type PolicyConfig } from '../../policy/index';
import { DaemonMetrics } from '../metrics';
import { isMountPoint, unmountQuietly } from '../memtier';
import { DEFAULT_HOLDER_TIMEOUT_S, restartPaths, type RestartOptions } from '../restart';
import { DaemonError, errorReply } from './errors';
import { ManagedMount } from './managed-mount';
import { SizedDiskTier } from './disk-tier';
import { parseControlLine, type AddMountRequest, type ControlReply, type ControlRequest } from './messages';
import { daemonPaths, ensureSharedParent, heldStateDir, type DaemonPaths } from './paths';
import { isDaemonAlive, MountRecords, readDaemonRecord, writeJsonAtomic, type DaemonRecord, type MountRecord } from './state';
import { createLogger } from '../../log/index';

export interface NodeDaemonOptions {
  stateDir?: string;
  socket?: string;
  /** The shared parent of default mount points; default `<stateDir>/mounts`. */
  mountsDir?: string;
  /** Serve /metrics over HTTP on 127.0.0.1:port as well as on the socket. */
  metricsPort?: number;
  /** A policy file (policy/ schema); default DEFAULT_POLICY_CONFIG. */
  policyFile?: string;
  logger?: Logger;
  /**
   * New mounts survive this process (issue 14): each gets a holder that keeps its connection and a
   * journal of its table, and the next daemon on this state dir takes them over, files and all.
   */
  restartable?: boolean;
  /** With `restartable`: seconds a holder waits for the next daemon before it aborts its connection (default 30). */
  holderTimeoutS?: number;
  /** With `restartable`: the cgroup the holders move into, so a kill of this daemon's whole cgroup spares them (RestartOptions.holderCgroup). */
  holderCgroup?: string;
  cgroupFs?: string;
}

/** What a restart found and did with each stale mount. */
export interface RecoveryReport {
  /** Taken over from their holders: every file still there. */
  resumed: string[];
  /** Mounted empty at the same paths (no holder kept them). */
  remounted: string[];
  failed: Array<{ id: string; error: string }>;
  brokenRecords: string[];
}

/**
 * One process serving every Ephemera mount of a node (a Node process idles at ~39 MiB: one per
 * container would eat the memory we mean to harvest). Mounts come and go through the control API;
 * each has a record in the state dir, so after a crash the next daemon detaches the dead FUSE
 * mounts and mounts empty ones at the same paths: contents of a crashed daemon's memory tier are
 * gone (the kernel drops its pages with the process), spilled files too.
 */
export class NodeDaemon {
  private readonly mounts = new Map<string, ManagedMount>();
  /** Mount id → the Docker container it serves (when the engine told us). */
  private readonly containerOf = new Map<string, string>();
  private readonly managerLinks: ManagerLinks;
  /** Ids with an add or remove in flight: a second request for one of them is refused, not interleaved. */
  private readonly busy = new Set<string>();
  private server: net.Server | undefined;
  private httpServer: http.Server | undefined;
  private readonly connections = new Set<net.Socket>();
  readonly metrics: DaemonMetrics;
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly paths: DaemonPaths,
    private readonly records: MountRecords,
    private readonly policy: PolicyConfig,
    readonly log: Logger,
    private daemonRecord: DaemonRecord,
    private readonly restart: RestartOptions | undefined,
  ) {
    this.metrics = new DaemonMetrics(() => this.mounts.values());
    this.managerLinks = new ManagerLinks(paths.stateDir, log);
  }

  static async start(options: NodeDaemonOptions = {}): Promise<{ daemon: NodeDaemon; recovery: RecoveryReport }> {
    const paths = daemonPaths(options.stateDir, options);
    const log = options.logger ?? createLogger('ephemera-node-daemon');
    const policy = options.policyFile ? loadPolicyConfig(options.policyFile) : DEFAULT_POLICY_CONFIG;
    fs.mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
    const previous = readDaemonRecord(paths.daemonRecord);
    if (previous && isDaemonAlive(previous.pid)) {
      throw new DaemonError('E_DAEMON', `a node daemon (pid ${previous.pid}) already serves ${paths.stateDir}`);
    }
    for (const dir of [paths.spillRoot, paths.memoryRoot, paths.fuseRoot]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const madeParentMount = ensureSharedParent(paths.mountsDir) || (previous?.madeParentMount ?? false);
    const record: DaemonRecord = {
      pid: process.pid,
      socket: paths.socket,
      mountsDir: paths.mountsDir,
      madeParentMount,
      startedAt: new Date().toISOString(),
      metricsPort: options.metricsPort ?? null,
    };
    writeJsonAtomic(paths.daemonRecord, record);
    const restart: RestartOptions | undefined = options.restartable
      ? {
          holderTimeoutS: options.holderTimeoutS ?? DEFAULT_HOLDER_TIMEOUT_S,
          ...(options.holderCgroup ? { holderCgroup: options.holderCgroup } : {}),
          ...(options.cgroupFs ? { cgroupFs: options.cgroupFs } : {}),
        }
      : undefined;
    const daemon = new NodeDaemon(paths, new MountRecords(paths.recordsDir), policy, log, record, restart);
    const recovery = await daemon.recover();
    await daemon.listen();
    if (options.metricsPort !== undefined) await daemon.serveMetricsHttp(options.metricsPort);
    return { daemon, recovery };
  }

  /**
   * Records of a crashed (or stopped) daemon: a mount whose holder still keeps its connection is
   * taken over (its files, tiers and cgroup charge stay; its manager link is joined again); the rest
   * are detached and mounted empty at the same paths.
   */
  private async recover(): Promise<RecoveryReport> {
    const { records, broken } = this.records.list();
    const report: RecoveryReport = { resumed: [], remounted: [], failed: [], brokenRecords: broken.map((b) => b.file) };
    for (const b of broken) this.log.error({ file: b.file, error: b.error }, 'unreadable mount record left in place (ephemera cleanup removes it)');
    for (const stale of records) {
      if (stale.restartable) {
        try {
          const t0 = Date.now();
          const m = await ManagedMount.resume(stale, this.policy, this.onMountError(stale.id), this.restartOf(stale)!);
          if (m) {
            this.mounts.set(stale.id, m);
            this.watchStopped(m);
            if (stale.cgroup !== null && stale.containerId !== null) await this.linkContainer(m, stale.containerId);
            report.resumed.push(stale.id);
            const info = m.mount.restartInfo();
            this.log.info({ id: stale.id, path: stale.path, ms: Date.now() - t0, files: m.usage().files, resendsApplied: info?.resendsApplied, repliesReplayed: info?.repliesReplayed }, 'mount taken over from its holder');
            continue;
          }
        } catch (e) {
          this.log.error({ id: stale.id, err: e }, 'cannot take a restartable mount over: mounting it EMPTY');
        }
      }
      // The mount comes back empty, restartable as this daemon's new mounts are.
      const record: MountRecord = { ...stale, restartable: this.restart !== undefined };
      // The dead public mount stays: the new one is bound over it, which is what reaches the
      // containers' rslave binds of it (managed-mount.ts). The private ones are detached.
      if (isMountPoint(record.fusePath)) unmountQuietly(record.fusePath);
      if (isMountPoint(record.memoryDir)) unmountQuietly(record.memoryDir);
      try {
        const m = await ManagedMount.open(record, this.policy, this.onMountError(record.id), this.restartOf(record));
        this.records.save(record);
        this.mounts.set(record.id, m);
        this.watchStopped(m);
        if (record.cgroup !== null && record.containerId !== null) await this.linkContainer(m, record.containerId);
        report.remounted.push(record.id);
        this.log.warn({ id: record.id, path: record.path }, 'remounted EMPTY after a daemon restart (the old contents are lost)');
      } catch (e) {
        report.failed.push({ id: record.id, error: (e as Error).message });
        this.log.error({ id: record.id, err: e }, 'cannot remount a recorded mount (its record stays for ephemera cleanup)');
      }
    }
    return report;
  }

  /** Where a restartable mount's holder and journal live: short (a unix socket path has 108 bytes), one per FUSE path. */
  private restartOf(record: MountRecord): RestartOptions | undefined {
    if (!record.restartable) return undefined;
    // A record of a restartable daemon, resumed by one that is not: the default wait.
    return { ...this.restart, holderTimeoutS: this.restart?.holderTimeoutS ?? DEFAULT_HOLDER_TIMEOUT_S, stateDir: heldStateDir(record.fusePath) };
  }

  /** Joins a cgroup-tied mount's container to its tenant manager's link (alarms logged here too). */
  private async linkContainer(m: ManagedMount, containerId: string): Promise<boolean> {
    const adapter = m.cgroupBudget!;
    adapter.on('alarm', (a) => this.log.warn({ id: m.id, shortfallBytes: a.shortfallBytes, oomPaused: a.oomPaused }, 'memory alarm'));
    // Attached again (a volume driver binding a container it found after a node restart): one link.
    const before = this.containerOf.get(m.id);
    if (before !== undefined) await this.managerLinks.detach(before);
    this.containerOf.set(m.id, containerId);
    return this.managerLinks.attach(containerId, m.owner, adapter);
  }

  private onMountError(id: string) {
    return (what: string, e: unknown) => this.log.error({ id, err: e }, what);
  }

  private watchStopped(m: ManagedMount): void {
    void m.mount.stopped.then(() => {
      if (this.mounts.get(m.id) === m && !m.closing && !this.stopping) this.log.error({ id: m.id }, 'the FUSE connection of a mount ended from outside');
    });
  }

  private async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.paths.socket), { recursive: true, mode: 0o700 });
    fs.rmSync(this.paths.socket, { force: true }); // a dead daemon's socket (a live one was refused above)
    const server = net.createServer((socket) => this.serve(socket));
    // The socket is created 0600 from the start (umask), not chmod-ed after a window.
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.paths.socket, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    fs.chmodSync(this.paths.socket, 0o600);
    this.server = server;
  }

  private async serveMetricsHttp(port: number): Promise<void> {
    this.httpServer = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.metrics.text().then(
        (text) => res.writeHead(200, { 'content-type': this.metrics.contentType }).end(text),
        (e) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.httpServer!.once('error', reject);
      this.httpServer!.listen(port, '127.0.0.1', () => resolve());
    });
  }

  get metricsPort(): number | null {
    const a = this.httpServer?.address();
    return a && typeof a === 'object' ? a.port : null;
  }

  /** One connection: a line in, one reply line out, in order (requests on a connection run one at a time). */
  private serve(socket: net.Socket): void {
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    const lines = readline.createInterface({ input: socket, crlfDelay: Infinity });
    let chain = Promise.resolve();
    lines.on('line', (line) => {
      if (line.trim() === '') return;
      chain = chain.then(async () => {
        const reply = await this.handleLine(line);
        if (!socket.destroyed) socket.write(JSON.stringify(reply) + '\n');
      });
    });
  }

  /** The whole control API as a function of one line (also what the WebSocket link will call). */
  async handleLine(line: string): Promise<ControlReply> {
    const parsed = parseControlLine(line);
    if (!parsed.ok) return parsed.reply;
    return this.handle(parsed.request);
  }

  async handle(request: ControlRequest): Promise<ControlReply> {
    const seq = request.seq === undefined ? {} : { seq: request.seq };
    try {
      if (this.stopping) throw new DaemonError('E_DAEMON', 'the daemon is stopping');
      const body = await this.dispatch(request);
      return { ok: true, ...seq, ...body };
    } catch (e) {
      if (!(e instanceof DaemonError)) this.log.warn({ err: e, type: request.type }, 'control request failed');
      return errorReply(e, request.seq);
    }
  }

  private async dispatch(r: ControlRequest): Promise<Record<string, unknown>> {
    switch (r.type) {
      case 'ping':
        return { pid: process.pid, mounts: this.mounts.size };
      case 'attach-cgroup': {
        const m = this.get(r.id);
        await m.attachCgroup(r.cgroup, r.sizeHint ?? null, r.oomPause ?? false, r.containerId ?? null);
        this.records.save(m.current);
        const adapter = m.cgroupBudget!;
        let linked = false;
        if (r.containerId) linked = await this.linkContainer(m, r.containerId);
        else adapter.on('alarm', (a) => this.log.warn({ id: r.id, shortfallBytes: a.shortfallBytes, oomPaused: a.oomPaused }, 'memory alarm'));
        return { id: r.id, cgroup: r.cgroup, usage: adapter.usage(), linkedToManager: linked };
      }
      case 'detach-cgroup': {
        const m = this.get(r.id);
        const containerId = this.containerOf.get(r.id);
        if (containerId) await this.managerLinks.detach(containerId);
        this.containerOf.delete(r.id);
        const eviction = await m.detachCgroup();
        this.records.save(m.current);
        return { id: r.id, eviction };
      }
      case 'shrink': {
        const m = this.get(r.id);
        return { id: r.id, ...(await m.shrink(r.targetLimit)) };
      }
      case 'add-mount':
        return { mount: await this.addMount(r) };
      case 'remove-mount':
        await this.removeMount(r.id);
        return { id: r.id };
      case 'set-budget': {
        const m = this.get(r.id);
        const report = await m.setBudget(r.budget);
        this.records.save(m.current);
        return { id: r.id, budget: r.budget, eviction: report, openBytesOverBudget: m.keeper.overBudgetOpenBytes };
      }
      case 'set-quotas': {
        const m = this.get(r.id);
        m.setQuotas(r.sizeQuota ?? m.sizeQuota(), r.inodeQuota ?? m.inodeQuota());
        this.records.save(m.current);
        return { id: r.id, sizeQuota: m.sizeQuota(), inodeQuota: m.inodeQuota() };
      }
      case 'evict': {
        const m = this.get(r.id);
        return { id: r.id, eviction: await m.evict(r.bytes, r.urgent ?? false) };
      }
      case 'promote': {
        const m = this.get(r.id);
        return { id: r.id, ...(await m.promote()) };
      }
      case 'stats':
        if (r.id !== undefined) return { mounts: [this.get(r.id).stats(r.inodes ?? false)] };
        return { mounts: [...this.mounts.values()].map((m) => m.stats(r.inodes ?? false)) };
      case 'list':
        return { mounts: [...this.mounts.values()].map((m) => ({ id: m.id, path: m.path, owner: m.owner })) };
      case 'metrics':
        return { contentType: this.metrics.contentType, text: await this.metrics.text() };
    }
  }

  private get(id: string): ManagedMount {
    const m = this.mounts.get(id);
    if (!m || this.busy.has(id)) throw new DaemonError('E_UNKNOWN_MOUNT', `no mount "${id}"`);
    return m;
  }

  private async addMount(r: AddMountRequest) {
    if (this.mounts.has(r.id) || this.busy.has(r.id)) throw new DaemonError('E_EXISTS', `mount "${r.id}" already exists`);
    const mountPath = path.resolve(r.path ?? path.join(this.paths.mountsDir, r.id));
    for (const other of this.mounts.values()) {
      if (other.path === mountPath) throw new DaemonError('E_EXISTS', `${mountPath} is already mount "${other.id}"`);
    }
    if (r.path !== undefined && !fs.existsSync(mountPath)) {
      throw new DaemonError('E_NO_MOUNTPOINT', `mount point ${mountPath} does not exist (omit path for one under ${this.paths.mountsDir})`);
    }
    const spillDir = path.resolve(r.spillDir ?? path.join(this.paths.spillRoot, r.id));
    const record: MountRecord = {
      id: r.id,
      path: mountPath,
      createdPath: !fs.existsSync(mountPath),
      budget: r.budget,
      sizeQuota: r.sizeQuota,
      inodeQuota: r.inodeQuota,
      spillDir,
      createdSpillDir: !fs.existsSync(spillDir),
      memoryDir: path.join(this.paths.memoryRoot, r.id),
      fusePath: path.join(this.paths.fuseRoot, r.id),
      owner: r.owner,
      cgroup: r.cgroup ?? null,
      sizeHint: null,
      oomPause: false,
      newFilesOnDisk: r.newFilesOnDisk ?? false,
      restartable: this.restart !== undefined,
      containerId: null,
      createdAt: new Date().toISOString(),
    };
    this.busy.add(r.id);
    try {
      const m = await ManagedMount.open(record, this.policy, this.onMountError(r.id), this.restartOf(record));
      try {
        this.records.save(record);
      } catch (e) {
        await m.close();
        throw e;
      }
      this.mounts.set(r.id, m);
      this.watchStopped(m);
      this.log.info({ id: r.id, path: mountPath, mode: m.mount.mode }, 'mount added');
      return m.stats();
    } finally {
      this.busy.delete(r.id);
    }
  }

  private async removeMount(id: string): Promise<void> {
    const m = this.get(id);
    this.busy.add(id);
    try {
      const containerId = this.containerOf.get(id);
      if (containerId) await this.managerLinks.detach(containerId);
      this.containerOf.delete(id);
      await m.close();
      removeMountLeftovers(m.current);
      this.records.remove(id);
      this.mounts.delete(id);
      this.log.info({ id }, 'mount removed');
    } finally {
      this.busy.delete(id);
    }
  }

  /**
   * Stops serving: unmounts every mount but keeps their records, so the next daemon puts them back
   * (empty) at the same paths, where containers still bind them. `ephemera cleanup` forgets them.
   */
  stop(): Promise<void> {
    return this.shutdown(async (m) => {
      try {
        await m.close();
      } catch (e) {
        this.log.error({ id: m.id, err: e }, 'unmount at stop failed');
      }
    });
  }

  /**
   * An upgrade (SIGUSR1 to `ephemera node-daemon --restartable`): each restartable mount is left
   * to its holder, answered up to the last request read, with its tiers, files, charge and record,
   * for the next daemon on this state dir to resume; any other mount is unmounted as at stop (its
   * record brings it back empty). The manager links drop as at a crash and are joined again.
   */
  async handOver(): Promise<{ handedOver: string[]; unmounted: string[] }> {
    const done = { handedOver: [] as string[], unmounted: [] as string[] };
    // Stopping already: nothing is left to hand over.
    await this.shutdown(async (m) => {
      if (m.current.restartable) {
        try {
          await m.handOver();
        } catch (e) {
          // Left half stopped (a stuck thread): the holder keeps it as after a crash.
          this.log.error({ id: m.id, err: e }, 'hand-over failed: the holder keeps the mount as after a crash');
        }
        done.handedOver.push(m.id);
        return;
      }
      try {
        await m.close();
        done.unmounted.push(m.id);
      } catch (e) {
        this.log.error({ id: m.id, err: e }, 'unmount at hand-over failed');
      }
    });
    return done;
  }

  /** The one way down (stop or hand-over, whichever comes first): the control socket, links and metrics go, then each mount by `each`. */
  private shutdown(each: (m: ManagedMount) => Promise<void>): Promise<void> {
    this.stopping ??= (async () => {
      this.server?.close();
      await this.managerLinks.close().catch(() => undefined);
      for (const c of this.connections) c.destroy();
      this.httpServer?.close();
      for (const m of this.mounts.values()) await each(m);
      this.mounts.clear();
      fs.rmSync(this.paths.socket, { force: true });
    })();
    return this.stopping;
  }

  get mountCount(): number {
    return this.mounts.size;
  }
  get record(): DaemonRecord {
    return this.daemonRecord;
  }
}

/** What a removed mount leaves: its spill dir and mount point, when the daemon made them. */
export function removeMountLeftovers(record: MountRecord): void {
  // A dead daemon's sized disk tier is still mounted inside the spill dir: detach it first.
  SizedDiskTier.remove(record.spillDir);
  if (record.createdSpillDir) fs.rmSync(record.spillDir, { recursive: true, force: true });
  else {
    for (const name of safeReaddir(record.spillDir)) if (name.endsWith('.spill')) fs.rmSync(path.join(record.spillDir, name), { force: true });
  }
  if (record.createdPath && !isMountPoint(record.path)) {
    try {
      fs.rmdirSync(record.path);
    } catch {
      /* not empty (someone wrote under the unmounted path) or already gone: left as found */
    }
  }
  if (!isMountPoint(record.memoryDir)) fs.rmSync(record.memoryDir, { recursive: true, force: true });
  if (record.restartable) {
    // A holder still waiting for a successor keeps a connection nobody will serve: closing its fds aborts it.
    const held = restartPaths(record.fusePath, heldStateDir(record.fusePath));
    const pid = Number(safeRead(held.pidFile));
    if (Number.isInteger(pid) && pid > 0 && safeRead(`/proc/${pid}/cmdline`).includes('ephemera-holder')) process.kill(pid, 'SIGKILL');
    fs.rmSync(held.dir, { recursive: true, force: true }); // its socket, log and journal
  }
  if (!isMountPoint(record.fusePath)) fs.rmSync(record.fusePath, { recursive: true, force: true });
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
