import * as fs from 'node:fs';
import type { PolicyConfig } from '../../policy/index';
import type { MountMetricsSource } from '../metrics';
import { EphemeraMount } from '../mount';
import type { NativeCounters, NativeUsage } from '../native';
import { attachMemoryAdapter, type AttachedAdapter } from './adapter-hook';
import { TierBalancer } from './balancer';
import { SizedMemoryTier } from './memory-tier';
import type { EvictionReport, MountStats } from './messages';
import { prepareSpillDir } from './paths';
import type { MountRecord } from './state';

/**
 * One mount of the node daemon: its FUSE session, its own sized memory-tier tmpfs, its spill dir,
 * its budget keeper and (with a cgroup) its memory adapter. Opened from a record, so a fresh
 * add-mount and a restart take the same path.
 */
export class ManagedMount implements MountMetricsSource {
  private constructor(
    private record: MountRecord,
    readonly mount: EphemeraMount,
    private readonly memoryTier: SizedMemoryTier,
    readonly balancer: TierBalancer,
    private readonly adapter: AttachedAdapter | undefined,
  ) {}

  static async open(record: MountRecord, policy: PolicyConfig, onError: (what: string, e: unknown) => void): Promise<ManagedMount> {
    const undo: Array<() => void | Promise<void>> = [];
    try {
      if (!fs.existsSync(record.path)) {
        fs.mkdirSync(record.path, { recursive: true, mode: 0o755 });
        undo.push(() => fs.rmdirSync(record.path));
      }
      prepareSpillDir(record.spillDir);
      if (record.createdSpillDir) undo.push(() => fs.rmSync(record.spillDir, { recursive: true, force: true }));
      const memoryTier = SizedMemoryTier.create(record.memoryDir, record.sizeQuota);
      undo.push(() => memoryTier.close());
      const mount = await EphemeraMount.open({
        mountpoint: record.path,
        allowOther: true, // the function runs as some container user
        sharedMemoryDir: memoryTier.dir,
        spillDir: record.spillDir,
        sizeQuota: record.sizeQuota,
        inodeQuota: record.inodeQuota,
      });
      undo.push(() => mount.close());
      const balancer = new TierBalancer(mount, {
        budget: record.budget,
        policy,
        newFilesOnDisk: record.newFilesOnDisk,
        promote: record.cgroup === null,
        onError,
      });
      undo.push(() => balancer.close());
      const adapter = record.cgroup === null ? undefined : await attachMemoryAdapter(mount, record.cgroup, policy);
      return new ManagedMount(record, mount, memoryTier, balancer, adapter);
    } catch (e) {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch {
          /* the first error is the one worth reporting */
        }
      }
      throw e;
    }
  }

  get id(): string {
    return this.record.id;
  }
  get owner(): string {
    return this.record.owner;
  }
  get path(): string {
    return this.record.path;
  }
  get current(): MountRecord {
    return this.record;
  }
  budget(): number {
    return this.balancer.budget;
  }
  sizeQuota(): number {
    return this.record.sizeQuota;
  }
  inodeQuota(): number {
    return this.record.inodeQuota;
  }
  usage(): NativeUsage {
    return this.mount.usage();
  }
  tierBytes(): { memory: number; disk: number } {
    return this.mount.tierBytes();
  }
  counters(): NativeCounters {
    return this.mount.counters();
  }
  totals() {
    return this.balancer.totals;
  }

  async setBudget(budget: number): Promise<EvictionReport> {
    const report = await this.balancer.setBudget(budget);
    this.record = { ...this.record, budget };
    return report;
  }

  /**
   * The memory tier's tmpfs is resized first: it refuses a size below what it holds, and then
   * nothing has changed. The native quotas follow.
   */
  setQuotas(sizeQuota: number, inodeQuota: number): void {
    this.memoryTier.resize(sizeQuota);
    this.mount.setQuotas(sizeQuota, inodeQuota);
    this.record = { ...this.record, sizeQuota, inodeQuota };
  }

  stats(withInodes = false): MountStats {
    const usage = this.mount.usage();
    const t = this.balancer.totals;
    return {
      id: this.record.id,
      path: this.record.path,
      owner: this.record.owner,
      mode: this.mount.mode,
      budget: this.balancer.budget,
      sizeQuota: this.record.sizeQuota,
      inodeQuota: this.record.inodeQuota,
      spillDir: this.record.spillDir,
      cgroup: this.record.cgroup,
      inodes: usage.inodes,
      files: usage.files,
      openFiles: usage.openFiles,
      bytes: { memory: usage.bytesMemory, disk: usage.bytesDisk },
      spills: t.spills,
      spilledBytes: t.spilledBytes,
      promotions: t.promotions,
      promotedBytes: t.promotedBytes,
      overBudgetOpenBytes: this.balancer.overBudgetOpenBytes,
      ...(withInodes
        ? {
            inodeTable: this.mount.inodeStats().map((s) => ({ ino: s.ino, tier: s.tier, size: s.size, allocated: s.allocated, openCount: s.openCount })),
          }
        : {}),
    };
  }

  /** Unmounts and frees the memory tier; the spill dir and mount point stay (the caller decides). */
  async close(): Promise<void> {
    await this.balancer.close();
    try {
      await this.adapter?.close();
    } finally {
      await this.mount.close();
      this.memoryTier.close();
    }
  }
}
