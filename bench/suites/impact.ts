import { createContainerSuite, type ContainerCase } from '../container-suite';
import { SINGLE_CONTAINER_TARGETS } from '../container-targets';
import { EPH_WORK } from '../payload';

/**
 * The thesis' micro-benchmark (notes §2, §8.1): two files of S MiB in /tmp, an 8 KiB sequential
 * fill, N unaligned random 8 KiB reads per file, then N random writes; latency = fill + read +
 * write. Three sweeps, each point in a fresh container per target: cold is its first invocation
 * (files created), warm the second (files reopened without truncation, as the original did).
 */
export interface ImpactPoint {
  sweep: 'limit_mib' | 'file_mib' | 'ops';
  limitMiB: number;
  fileMiB: number;
  ops: number;
}

export function impactGrid(quick: boolean): ImpactPoint[] {
  // --quick leaves out 32 MiB (minutes of page-cache thrash per target); 64 MiB still cannot hold
  // the two 60 MiB files in memory, which is where tmpfs is OOM-killed and Ephemera must spill.
  const limits = quick ? [64, 128, 256] : [32, 64, 128, 256];
  const sizes = quick ? [32, 128, 160] : [32, 64, 128, 160];
  const opCounts = quick ? [500, 2_000, 10_000] : [500, 5_000, 50_000, 500_000];
  const ops = quick ? 10_000 : 500_000;
  return [
    ...limits.map((limitMiB) => ({ sweep: 'limit_mib' as const, limitMiB, fileMiB: 60, ops })),
    ...sizes.map((fileMiB) => ({ sweep: 'file_mib' as const, limitMiB: 150, fileMiB, ops })),
    ...opCounts.map((n) => ({ sweep: 'ops' as const, limitMiB: 300, fileMiB: 128, ops: n })),
  ];
}

const SWEEP_WORKLOAD: Record<ImpactPoint['sweep'], string> = {
  limit_mib: 'impact-memory-limit',
  file_mib: 'impact-file-size',
  ops: 'impact-op-count',
};

export function impactCases(quick: boolean): ContainerCase[] {
  return impactGrid(quick).map((p) => ({
    workload: SWEEP_WORKLOAD[p.sweep],
    parameters: { primary: 'seconds', sweep: p.sweep, file_mib: p.fileMiB, files: 2, ops: p.ops, block: 8192 },
    image: 'function',
    memoryMiB: p.limitMiB,
    argv: [EPH_WORK, 'impact', '/tmp', String(p.fileMiB), String(p.ops)],
    largestFileMiB: p.fileMiB,
    phases: ['cold', 'warm'],
    // The original's 32 MiB point took 165 s at 500k ops on overlay; a stuck invocation must not eat the cap.
    timeoutMs: quick ? 120_000 : 600_000,
  }));
}

export const impactSuite = createContainerSuite({
  name: 'impact',
  description: 'thesis micro-benchmark sweeps in containers: memory limit, file size, op count (2 files, random 8 KiB ops)',
  defaultTimeCapS: { quick: 420, full: 5400 },
  // One pass by default: the 32 and 64 MiB points thrash the page cache for ~3 min per target
  // and phase (the original took 165 s on overlay), and the whole set must stay under 2 hours.
  defaultPasses: { quick: 1, full: 1 },
  defaultTargets: SINGLE_CONTAINER_TARGETS,
  images: ['function'],
  cases: impactCases,
});
