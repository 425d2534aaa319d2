import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { NativeCounters, NativeUsage } from './native';

/** What the metrics read from one mount at scrape time (nothing is pushed per operation). */
export interface MountMetricsSource {
  id: string;
  owner: string;
  budget(): number;
  sizeQuota(): number;
  inodeQuota(): number;
  usage(): NativeUsage;
  tierBytes(): { memory: number; disk: number };
  counters(): NativeCounters;
  totals(): { spills: number; spilledBytes: number; promotions: number; promotedBytes: number; moveErrors: number };
}

/**
 * The node daemon's Prometheus metrics on a registry of its own (so several daemons in one test
 * process never collide with prom-client's global one). Values are read from the mounts when
 * scraped: the native per-opcode counters are already atomics, so a scrape costs one pass per mount.
 */
export class DaemonMetrics {
  readonly registry = new Registry();

  constructor(mounts: () => Iterable<MountMetricsSource>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'ephemera_daemon_' });
    const registers = [this.registry];
    const perMount = <T>(read: (m: MountMetricsSource) => T) => {
      const out: Array<[MountMetricsSource, T]> = [];
      for (const m of mounts()) out.push([m, read(m)]);
      return out;
    };
    new Gauge({
      name: 'ephemera_mounts',
      help: 'Mounts served by this daemon',
      registers,
      collect() {
        this.set([...mounts()].length);
      },
    });
    new Gauge({
      name: 'ephemera_mount_bytes',
      help: 'Bytes allocated per tier (memory tier, disk tier)',
      labelNames: ['mount', 'owner', 'tier'],
      registers,
      collect() {
        this.reset();
        for (const [m, b] of perMount((x) => x.tierBytes())) {
          this.set({ mount: m.id, owner: m.owner, tier: 'memory' }, b.memory);
          this.set({ mount: m.id, owner: m.owner, tier: 'disk' }, b.disk);
        }
      },
    });
    const usageGauge = (name: string, help: string, pick: (u: NativeUsage) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['mount', 'owner'],
        registers,
        collect() {
          this.reset();
          for (const [m, u] of perMount((x) => x.usage())) this.set({ mount: m.id, owner: m.owner }, pick(u));
        },
      });
    usageGauge('ephemera_mount_inodes', 'Live inodes (files, directories, links)', (u) => u.inodes);
    usageGauge('ephemera_mount_files', 'Regular files with data', (u) => u.files);
    usageGauge('ephemera_mount_open_files', 'Regular files open now', (u) => u.openFiles);
    usageGauge('ephemera_mount_links', 'Hard links beyond each file\'s first name (counted against the inode quota, as on tmpfs)', (u) => u.links);
    usageGauge('ephemera_mount_name_bytes', 'Names, symlink targets and xattrs held on the daemon heap (counted against the size quota)', (u) => u.nameBytes);
    usageGauge('ephemera_mount_size_quota_in_force_bytes', 'Size quota the store enforces (the tmpfs default when none is set)', (u) => u.sizeQuota);
    usageGauge('ephemera_mount_inode_quota_in_force', 'Inode quota the store enforces (the tmpfs default when none is set)', (u) => u.inodeQuota);
    usageGauge('ephemera_mount_moves_refused_mapped', 'Tier moves refused because a process still mapped the file', (u) => u.movesRefusedMapped);
    usageGauge('ephemera_mount_demoted_at_open', 'Memory-tier files moved to disk before an OPEN for writing was answered', (u) => u.demotedAtOpen);
    usageGauge('ephemera_mount_admitted_unmovable', 'OPENs for writing admitted in memory because another handle or a mapping held the file', (u) => u.admittedUnmovable);
    const limitGauge = (name: string, help: string, pick: (m: MountMetricsSource) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['mount', 'owner'],
        registers,
        collect() {
          this.reset();
          for (const m of mounts()) this.set({ mount: m.id, owner: m.owner }, pick(m));
        },
      });
    limitGauge('ephemera_mount_budget_bytes', 'Memory-tier budget', (m) => m.budget());
    limitGauge('ephemera_mount_size_quota_bytes', 'Size quota over both tiers (0 = unlimited)', (m) => m.sizeQuota());
    limitGauge('ephemera_mount_inode_quota', 'Inode quota (0 = unlimited)', (m) => m.inodeQuota());
    // One counter per mount, read from the mount at each scrape (a missing native count is 0).
    const mountCounter = <T>(read: (m: MountMetricsSource) => T) => (name: string, help: string, pick: (t: T) => number | undefined) =>
      new Counter({
        name,
        help,
        labelNames: ['mount', 'owner'],
        registers,
        collect() {
          this.reset();
          for (const [m, t] of perMount(read)) this.inc({ mount: m.id, owner: m.owner }, pick(t) ?? 0);
        },
      });
    const totalCounter = mountCounter((m) => m.totals());
    totalCounter('ephemera_mount_spills_total', 'Inodes moved memory → disk', (t) => t.spills);
    totalCounter('ephemera_mount_spilled_bytes_total', 'Bytes moved memory → disk', (t) => t.spilledBytes);
    totalCounter('ephemera_mount_promotions_total', 'Inodes moved disk → memory', (t) => t.promotions);
    totalCounter('ephemera_mount_promoted_bytes_total', 'Bytes moved disk → memory', (t) => t.promotedBytes);
    totalCounter('ephemera_mount_move_errors_total', 'Tier moves that failed (ENOSPC, EIO)', (t) => t.moveErrors);
    const opCounter = (name: string, help: string, pick: (c: { count: number; errors: number }) => number) =>
      new Counter({
        name,
        help,
        labelNames: ['mount', 'owner', 'opcode'],
        registers,
        collect() {
          this.reset();
          for (const [m, c] of perMount((x) => x.counters())) {
            for (const [opcode, v] of Object.entries(c.ops)) {
              const value = pick(v);
              if (value > 0) this.inc({ mount: m.id, owner: m.owner, opcode }, value);
            }
          }
        },
      });
    opCounter('ephemera_mount_requests_total', 'FUSE requests served, per opcode', (c) => c.count);
    opCounter('ephemera_mount_request_errors_total', 'FUSE requests answered with an error, per opcode', (c) => c.errors);
    new Counter({
      name: 'ephemera_mount_protocol_faults_total',
      help: 'Requests the native core answered by its safety nets: unanswered (EIO from the reply destructor), exceptions, malformed',
      labelNames: ['mount', 'owner', 'kind'],
      registers,
      collect() {
        this.reset();
        for (const [m, c] of perMount((x) => x.counters())) {
          this.inc({ mount: m.id, owner: m.owner, kind: 'unanswered' }, c.unanswered);
          this.inc({ mount: m.id, owner: m.owner, kind: 'exception' }, c.exceptions);
          this.inc({ mount: m.id, owner: m.owner, kind: 'malformed' }, c.malformed);
        }
      },
    });
    // Safety-valve counts the native core keeps per mount (each 0 where all goes as designed).
    const nativeCounter = mountCounter((m): NativeCounters => m.counters());
    nativeCounter(
      'ephemera_mount_uncharged_fallocates_total',
      "Allocating fallocates on the memory tier the daemon did itself although a container was attached (the charge helper could not run): memory charged to the daemon, not the container",
      (c) => c.unchargedFallocates,
    );
    nativeCounter(
      'ephemera_mount_backing_open_failures_total',
      'Opens under passthrough whose backing file the kernel refused (FUSE_DEV_IOC_BACKING_OPEN): the file was served through the daemon, slower',
      (c) => c.backingOpenFailures,
    );
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
