import { MountPeer } from './mount-peer';
import type { CgroupBudget } from '../cgroup-budget';
import type { Logger } from 'pino';

/**
 * The node daemon's side of the tenant managers' link: one MountPeer per tenant (the manager of
 * that tenant listens on `<stateDir>/managers/<tenant>.sock`, its token in `<stateDir>/tokens/`),
 * carrying every container of that tenant whose mount is tied to a cgroup. The manager reads
 * usage, asks for evictions and shrinks before it lowers a limit, and hears memory alarms.
 * A tenant's peer only ever carries that tenant's containers: a manager cannot reach another's.
 */
export class ManagerLinks {
  private readonly peers = new Map<string, Promise<MountPeer | undefined>>();
  private readonly attached = new Map<string, { tenant: string; budget: CgroupBudget; onUsage: () => void; onAlarm: (a: { shortfallBytes: number; oomPaused: boolean }) => void }>();

  constructor(private readonly stateDir: string, private readonly log: Logger) {}

  private peer(tenant: string): Promise<MountPeer | undefined> {
    let p = this.peers.get(tenant);
    if (!p) {
      p = MountPeer.connect({ tenant, stateDir: this.stateDir }).catch((e: unknown) => {
        // No manager for this tenant (yet): the mount still works alone; retry on the next attach.
        this.log.info({ tenant, err: (e as Error).message }, 'no tenant manager to link to');
        this.peers.delete(tenant);
        return undefined;
      });
      this.peers.set(tenant, p);
    }
    return p;
  }

  private readonly retries = new Map<string, NodeJS.Timeout>();

  /**
   * Joins the container's mount to its tenant manager's link. A manager that is not up yet (it is
   * opened on its tenant's first container, possibly after that container's /tmp) is retried every
   * second for a minute; the mount works alone meanwhile.
   */
  async attach(containerId: string, tenant: string, budget: CgroupBudget, attempt = 0): Promise<boolean> {
    const peer = await this.peer(tenant);
    if (!peer) {
      if (attempt < 60 && !this.closed) {
        const t = setTimeout(() => {
          this.retries.delete(containerId);
          void this.attach(containerId, tenant, budget, attempt + 1);
        }, 1000);
        t.unref();
        this.retries.set(containerId, t);
      }
      return false;
    }
    let last = 0;
    const onUsage = () => {
      const now = Date.now();
      if (now - last < 200) return; // the manager needs a fresh view, not every tick
      last = now;
      void peer.reportUsage(containerId).catch(() => undefined);
    };
    const onAlarm = (a: { shortfallBytes: number; oomPaused: boolean }) => peer.alarm(containerId, a.shortfallBytes, a.oomPaused);
    budget.on('usage', onUsage);
    budget.on('alarm', onAlarm);
    this.attached.set(containerId, { tenant, budget, onUsage, onAlarm });
    await peer.attach(containerId, {
      read: () => {
        const u = budget.usage();
        return {
          memoryBytes: u.memoryTierBytes,
          diskBytes: u.diskTierBytes,
          usageBytes: u.usageBytes,
          limitBytes: Number.isFinite(u.limitBytes) ? u.limitBytes : 0,
        };
      },
      // The budget reads the limit from the cgroup itself (polled ≤ 20 ms); nothing to store.
      onBudget: () => undefined,
      evict: async (bytes) => (await budget.evictBytes(bytes)).usageBytes,
      shrink: async (target) => (await budget.requestShrink(target)).usageBytes,
    });
    return true;
  }

  async detach(containerId: string): Promise<void> {
    clearTimeout(this.retries.get(containerId));
    this.retries.delete(containerId);
    const a = this.attached.get(containerId);
    if (!a) return;
    this.attached.delete(containerId);
    a.budget.off('usage', a.onUsage);
    a.budget.off('alarm', a.onAlarm);
    (await this.peers.get(a.tenant))?.detach(containerId);
  }

  private closed = false;

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.retries.values()) clearTimeout(t);
    this.retries.clear();
    for (const p of this.peers.values()) await (await p)?.close();
    this.peers.clear();
  }
}
