import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { removeLeftoverCgroup } from '../../engine/index';
import { DaemonClient, MountId, writeJsonAtomic } from '../../fusefs/daemon/index';
import type { TenantManager } from '../../manager/index';
import type { ContainerProfile } from '../../policy/index';
import { formatError } from '../../errors/index';
import { VolumeError, errorMessage } from './errors';
import { parseVolumeOptions } from './options';
import { CreateRequest, ENDPOINTS, MountRequest, NameRequest, type Endpoint, type PluginReply, type VolumeInfo } from './protocol';
import { tenantOfVolumeToken } from './tokens';

/** One volume as the driver keeps it (and writes it down, so a restarted node still knows it). */
export interface VolumeRecord {
  name: string;
  mountId: string;
  /** From a valid volume token; null: no tenant (no manager, no lending). */
  tenant: string | null;
  sizeQuota: number;
  inodeQuota: number;
  /** From volume-opt mem=/file=; null: not profiled (the manager neither lends from nor to it). */
  profile: ContainerProfile | null;
  createdAt: string;
  /**
   * Docker's mount id while a container has the volume mounted, and that container with the limit
   * it had when first bound (before any loan): kept in the table so a restarted node knows what is
   * mounted, and its manager lends from the platform's limit, not from one a loan already raised.
   */
  mountedBy?: string;
  boundTo?: { id: string; initialLimitBytes: number };
}

/** The container a volume serves now: Docker told us at its `start` event. */
export interface BoundContainer {
  id: string;
  name: string;
  cgroup: string;
  /** The tenant manager took it in (it has a memory limit and the volume a tenant). */
  managed: boolean;
}

interface LiveVolume {
  record: VolumeRecord;
  path: string;
  /** Docker's mount id of the caller using it (one running container at a time). */
  mountedBy: string | undefined;
  container: BoundContainer | undefined;
  /** Operations on one volume run one at a time, in arrival order. */
  chain: Promise<unknown>;
}

export interface VolumeDriverOptions {
  /** The driver's name: `--mount …,volume-driver=<name>`; the socket is `<pluginDir>/<name>.sock`. */
  name: string;
  /** The node's state dir: volume tokens, and this driver's volume table. */
  stateDir: string;
  daemon: DaemonClient;
  /** Size quota of a volume without size= (the node's --tmp-size or its default). */
  defaultSizeQuota: number;
  /** The tenant's manager (opened on first use); undefined: no lending (`ephemera node --no-sharing`). */
  managerOf?: (tenant: string) => Promise<TenantManager>;
  log: Logger;
}

/** What a started container looks like to the driver (from `docker inspect`). */
export interface StartedContainer {
  id: string;
  name: string;
  pid: number;
  memoryLimitBytes: number;
  cgroup: string;
}

/**
 * The Docker volume driver's logic, transport-free: `handle(endpoint, body)` answers one plugin
 * call. Each volume is a mount of the node daemon made at Create (budget 0, new files on disk:
 * the first requests come from dockerd copying the image's /tmp, before the container's cgroup
 * exists, and dockerd's own cgroup must not pay for them). The container's cgroup is bound from
 * Docker's events (`bind`), never from inside a plugin call: dockerd holds its locks while it
 * calls us, so a Docker API call from Mount or Unmount can deadlock it.
 */
export class VolumeDriver {
  private readonly volumes = new Map<string, LiveVolume>();
  private readonly tableFile: string;

  private constructor(private readonly opts: VolumeDriverOptions) {
    this.tableFile = path.join(opts.stateDir, 'volumes', `${opts.name}.json`);
  }

  get name(): string {
    return this.opts.name;
  }

  /**
   * Loads the driver's volume table. A volume whose mount the daemon no longer has (the node was
   * stopped or crashed: the daemon remounts recorded mounts empty, or they were cleaned up) gets
   * an empty mount again, so Docker's view of its volumes stays true.
   */
  static async open(opts: VolumeDriverOptions): Promise<VolumeDriver> {
    const d = new VolumeDriver(opts);
    fs.mkdirSync(path.dirname(d.tableFile), { recursive: true, mode: 0o700 });
    let saved: VolumeRecord[] = [];
    try {
      saved = (JSON.parse(fs.readFileSync(d.tableFile, 'utf8')) as { volumes: VolumeRecord[] }).volumes;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') opts.log.error({ err: errorMessage(e), file: d.tableFile }, 'unreadable volume table: starting empty');
    }
    const mounts = new Map((await opts.daemon.list()).map((m) => [m.id, m.path]));
    for (const record of saved) {
      let mountPath = mounts.get(record.mountId);
      try {
        mountPath ??= (await d.addMount(record)).path;
        d.volumes.set(record.name, { record, path: mountPath, mountedBy: record.mountedBy, container: undefined, chain: Promise.resolve() });
      } catch (e) {
        opts.log.error({ volume: record.name, err: errorMessage(e) }, 'cannot serve a recorded volume again');
      }
    }
    d.save();
    return d;
  }

  /** One plugin call. Never throws: a refusal is `{Err}`, as Docker expects. */
  async handle(endpoint: string, body: unknown): Promise<{ status: number; reply: PluginReply }> {
    if (!(endpoint in ENDPOINTS)) return { status: 404, reply: { Err: `unknown plugin endpoint ${endpoint}` } };
    try {
      return { status: 200, reply: await this.dispatch(endpoint as Endpoint, body) };
    } catch (e) {
      if (!(e instanceof VolumeError)) this.opts.log.warn({ endpoint, err: errorMessage(e) }, 'volume call failed');
      // Docker shows Err to the user as is: it carries the code, once.
      return { status: 500, reply: { Err: formatError(e) } };
    }
  }

  private async dispatch(endpoint: Endpoint, body: unknown): Promise<PluginReply> {
    switch (endpoint) {
      case '/Plugin.Activate':
        return { Implements: ['VolumeDriver'] };
      case '/VolumeDriver.Capabilities':
        // local: a volume lives on this node only (its data is this node's memory and disk).
        return { Capabilities: { Scope: 'local' } };
      case '/VolumeDriver.List':
        return { Volumes: [...this.volumes.values()].map((v) => this.info(v)) };
      case '/VolumeDriver.Create':
        await this.create(parse(CreateRequest, body, endpoint));
        return {};
      case '/VolumeDriver.Remove': {
        const { Name } = parse(NameRequest, body, endpoint);
        await this.remove(Name);
        return {};
      }
      case '/VolumeDriver.Path':
        return { Mountpoint: this.live(parse(NameRequest, body, endpoint).Name).path };
      case '/VolumeDriver.Get':
        return { Volume: this.info(this.live(parse(NameRequest, body, endpoint).Name)) };
      case '/VolumeDriver.Mount':
        return { Mountpoint: await this.mount(parse(MountRequest, body, endpoint)) };
      case '/VolumeDriver.Unmount':
        await this.unmount(parse(MountRequest, body, endpoint));
        return {};
    }
  }

  // --- the calls --------------------------------------------------------------------------------

  private async create(r: CreateRequest): Promise<void> {
    const options = parseVolumeOptions(r.Opts ?? {});
    const tenant = await this.tenantOf(options.token, options.claimedTenant);
    if (this.volumes.has(r.Name)) return; // Docker may ask again for a volume it knows
    const record: VolumeRecord = {
      name: r.Name,
      mountId: mountIdOf(this.opts.name, r.Name),
      tenant,
      sizeQuota: options.sizeQuota ?? this.opts.defaultSizeQuota,
      inodeQuota: options.inodeQuota,
      profile: options.profile,
      createdAt: new Date().toISOString(),
    };
    const { path: mountPath } = await this.addMount(record);
    this.volumes.set(r.Name, { record, path: mountPath, mountedBy: undefined, container: undefined, chain: Promise.resolve() });
    this.save();
    this.opts.log.info({ volume: r.Name, tenant, sizeQuota: record.sizeQuota, profile: record.profile }, 'volume created');
  }

  /**
   * The tenant comes from the operator's binding, the token, never from what the creator claims:
   * a claim is only checked against the token. No token and no claim: a /tmp without a tenant.
   */
  private async tenantOf(token: string | undefined, claimed: string | undefined): Promise<string | null> {
    if (token === undefined) {
      if (claimed !== undefined) {
        throw new VolumeError('E_TOKEN', `volume-opt=tenant=${claimed} needs volume-opt=token=<that tenant's volume token> (the operator makes it: ephemera volume-token create --tenant ${claimed})`);
      }
      return null;
    }
    const tenant = await tenantOfVolumeToken(this.opts.stateDir, token);
    if (tenant === undefined) throw new VolumeError('E_TOKEN', 'volume-opt=token is not a volume token of this node: refused (no /tmp, no loan)');
    if (claimed !== undefined && claimed !== tenant) {
      // Which tenant the token does belong to is not said: the message goes to the creator.
      throw new VolumeError('E_WRONG_TENANT', `the volume claims tenant ${claimed}, but its token is not ${claimed}'s: refused (a volume's tenant is its token's)`);
    }
    return tenant;
  }

  private async remove(name: string): Promise<void> {
    const v = this.volumes.get(name);
    if (!v) return; // already gone: Remove is idempotent
    await this.serial(v, async () => {
      if (v.mountedBy !== undefined) {
        throw new VolumeError('E_IN_USE', `volume ${name} is mounted${v.container ? ` by container ${v.container.name}` : ''}: unmount it first`);
      }
      try {
        await this.opts.daemon.removeMount(v.record.mountId);
      } catch (e) {
        if ((e as { code?: string }).code !== 'E_UNKNOWN_MOUNT') throw new VolumeError('E_DAEMON', `removing the store of volume ${name}: ${errorMessage(e)}`, e);
      }
      this.volumes.delete(name);
      this.save();
      this.opts.log.info({ volume: name }, 'volume removed');
    });
  }

  /** One running container per volume: a second caller is refused, naming the first. */
  private mount(r: MountRequest): Promise<string> {
    const v = this.live(r.Name);
    return this.serial(v, async () => {
      if (v.mountedBy !== undefined && v.mountedBy !== r.ID) {
        const holder = v.container ? `container ${v.container.name} (${v.container.id.slice(0, 12)})` : `mount ${v.mountedBy}`;
        throw new VolumeError('E_IN_USE', `volume ${r.Name} is in use by ${holder}: an Ephemera /tmp serves one running container`);
      }
      v.mountedBy = r.ID;
      v.record = { ...v.record, mountedBy: r.ID };
      this.save();
      return v.path;
    });
  }

  /**
   * The container stopped. No Docker call here (dockerd waits on us with its locks held): the
   * daemon stops following the cgroup and moves the memory tier to disk; the manager is told
   * without waiting for it.
   */
  private unmount(r: MountRequest): Promise<void> {
    const v = this.live(r.Name);
    return this.serial(v, async () => {
      if (v.mountedBy !== r.ID) return; // not this caller's (or already unmounted)
      const bound = v.container;
      this.markUnmounted(v);
      if (bound) {
        this.leaveManager(v.record, bound);
        try {
          const { eviction } = await this.opts.daemon.detachCgroup(v.record.mountId);
          this.opts.log.info({ volume: r.Name, container: bound.name, movedToDisk: eviction.freedBytes, leftInMemory: eviction.memoryBytes }, 'volume unmounted: memory tier moved to disk');
        } catch (e) {
          throw new VolumeError('E_DAEMON', `detaching volume ${r.Name} from its container: ${errorMessage(e)}`, e);
        }
        // The adapter's charged-copy helper may have been a task of the cgroup when runc tried to
        // remove it (EBUSY, not retried): the container is stopped, so an empty cgroup is a leftover.
        await removeLeftoverCgroup(bound.cgroup).catch((e: unknown) => this.opts.log.warn({ cgroup: bound.cgroup, err: errorMessage(e) }, 'leftover cgroup not removed'));
      }
    });
  }

  // --- binding (from Docker's events, outside any plugin call) -----------------------------------

  /**
   * A container that mounts `volume` started: its memory cgroup exists now. The mount follows it
   * (memory adapter), and a tenant's container joins its manager and runs (its loans open now).
   * A container started again (restart) is bound again.
   */
  bind(volume: string, c: StartedContainer): Promise<void> {
    const v = this.volumes.get(volume);
    if (!v) return Promise.resolve();
    return this.serial(v, async () => {
      if (v.mountedBy === undefined) return; // already stopped again
      if (v.container?.id === c.id) return;
      const tenant = v.record.tenant;
      const manager = tenant !== null && this.opts.managerOf && c.memoryLimitBytes > 0 ? await this.opts.managerOf(tenant) : undefined;
      // Bound before this node restarted: its limit now may include a loan; the platform's is the one recorded.
      const initialLimitBytes = v.record.boundTo?.id === c.id ? v.record.boundTo.initialLimitBytes : c.memoryLimitBytes;
      v.record = { ...v.record, boundTo: { id: c.id, initialLimitBytes } };
      this.save();
      await this.opts.daemon.call({
        type: 'attach-cgroup',
        id: v.record.mountId,
        cgroup: c.cgroup,
        sizeHint: v.record.profile?.largestFileBytes ?? null,
        // With the container's id the mount reports to its tenant's manager.
        ...(manager ? { containerId: c.id } : {}),
      });
      v.container = { id: c.id, name: c.name, cgroup: c.cgroup, managed: false };
      if (manager && tenant !== null) {
        await manager.addContainer({ id: c.id, tenant, function: c.name, initialLimitBytes, profile: v.record.profile, cgroupPath: c.cgroup });
        v.container.managed = true;
        const outcome = await manager.beginRun(c.id);
        this.opts.log.info({ volume, container: c.name, tenant, steps: outcome.plan.steps.length, ok: outcome.ok }, 'volume container joined its tenant manager');
      } else if (tenant !== null && this.opts.managerOf && c.memoryLimitBytes <= 0) {
        this.opts.log.warn({ volume, container: c.name }, 'container has no memory limit: it neither lends nor borrows');
      }
      this.opts.log.info({ volume, container: c.name, cgroup: c.cgroup }, 'volume bound to its container');
    });
  }

  /** No container mounts `v` any more: in memory and in the table. */
  private markUnmounted(v: LiveVolume): void {
    v.mountedBy = undefined;
    v.container = undefined;
    const { mountedBy: _m, boundTo: _b, ...rest } = v.record;
    v.record = rest;
    this.save();
  }

  /** The container that had `volume` mounted is gone (it stopped while the node was down): no longer in use. */
  forgetMount(volume: string): Promise<void> {
    const v = this.volumes.get(volume);
    if (!v) return Promise.resolve();
    return this.serial(v, async () => {
      this.markUnmounted(v);
      this.opts.log.warn({ volume }, 'volume was mounted by a container that stopped while the node was down: no longer in use');
      await this.opts.daemon.detachCgroup(v.record.mountId).catch(() => undefined);
    });
  }

  /** Docker says the container died: its loans are settled (the unmount that follows detaches the store). */
  containerDied(containerId: string): void {
    for (const v of this.volumes.values()) {
      if (v.container?.id === containerId) this.leaveManager(v.record, v.container);
    }
  }

  private leaveManager(record: VolumeRecord, c: BoundContainer): void {
    if (!c.managed || record.tenant === null || !this.opts.managerOf) return;
    c.managed = false;
    void this.opts
      .managerOf(record.tenant)
      .then((m) => (m.containerIds().includes(c.id) ? m.terminate(c.id) : undefined))
      .catch((e: unknown) => this.opts.log.error({ container: c.name, err: errorMessage(e) }, 'settling the loans of a stopped volume container failed'));
  }

  /** The volumes the driver serves now (the CLI and tests read this). */
  list(): Array<VolumeRecord & { path: string; mounted: boolean; container: BoundContainer | null }> {
    return [...this.volumes.values()].map((v) => ({ ...v.record, path: v.path, mounted: v.mountedBy !== undefined, container: v.container ?? null }));
  }

  /** Waits for every volume's operations in flight. */
  async idle(): Promise<void> {
    await Promise.all([...this.volumes.values()].map((v) => v.chain.catch(() => undefined)));
  }

  // --- helpers ----------------------------------------------------------------------------------

  private addMount(record: VolumeRecord): Promise<{ path: string }> {
    return this.opts.daemon
      .addMount({
        id: record.mountId,
        budget: 0,
        sizeQuota: record.sizeQuota,
        inodeQuota: record.inodeQuota,
        owner: record.tenant ?? 'untenanted',
        newFilesOnDisk: true,
      })
      .then(
        (r) => ({ path: r.mount.path }),
        (e: unknown) => {
          throw new VolumeError('E_DAEMON', `cannot make the store of volume ${record.name}: ${errorMessage(e)}`, e);
        },
      );
  }

  private live(name: string): LiveVolume {
    const v = this.volumes.get(name);
    if (!v) throw new VolumeError('E_NO_VOLUME', `no volume ${name} on driver ${this.opts.name}`);
    return v;
  }

  private info(v: LiveVolume): VolumeInfo {
    const r = v.record;
    return {
      Name: r.name,
      Mountpoint: v.path,
      CreatedAt: r.createdAt,
      Status: {
        tenant: r.tenant ?? 'none (no token: no lending)',
        sizeQuotaBytes: r.sizeQuota,
        profile: r.profile ? `from volume options: mem ${r.profile.peakMemoryBytes} B, file ${r.profile.largestFileBytes} B` : 'none (no mem=/file=): neither lends nor borrows',
        container: v.container ? `${v.container.name} (${v.container.id.slice(0, 12)})` : null,
      },
    };
  }

  private serial<T>(v: LiveVolume, work: () => Promise<T>): Promise<T> {
    const run = v.chain.then(work, work);
    v.chain = run.catch(() => undefined);
    return run;
  }

  private save(): void {
    writeJsonAtomic(this.tableFile, { volumes: [...this.volumes.values()].map((v) => v.record) });
  }
}

/** `<driver>.<volume>` when it is a valid mount id, else a digest of both (Docker names run to 255). */
export function mountIdOf(driver: string, volume: string): string {
  const natural = `${driver}.${volume}`;
  if (MountId.safeParse(natural).success) return natural;
  return `vol.${createHash('sha256').update(`${driver}\0${volume}`).digest('hex').slice(0, 40)}`;
}

function parse<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: Array<{ path: PropertyKey[]; message: string }> } } }, body: unknown, endpoint: string): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const detail = r.error.issues.map((i) => `${i.path.map(String).join('.') || '(body)'}: ${i.message}`).join('; ');
  throw new VolumeError('E_BAD_REQUEST', `bad ${endpoint.slice(1)} request: ${detail}`);
}
