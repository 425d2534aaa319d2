import type { z } from 'zod';
import { HeadroomSchema } from '../../policy/index';
import { MemoryCgroupError } from './errors';

/**
 * The mark the memory adapter keeps a container's rss + shmem under: `limit − headroom`, with
 * headroom = max(minBytes, fraction × limit). The floor keeps small containers from running at the
 * edge, where the kernel reclaims the disk tier's page cache and then OOM-kills; the fraction scales
 * it for large ones.
 */
// The policy's own headroom section: one schema, so a policy file and an adapter option agree.
export const HeadroomConfigSchema = HeadroomSchema;

export type HeadroomConfig = z.infer<typeof HeadroomConfigSchema>;
export type HeadroomConfigInput = z.input<typeof HeadroomConfigSchema>;

export const DEFAULT_HEADROOM: HeadroomConfig = HeadroomConfigSchema.parse({});

/** Validates a headroom config; bad input is `E_BAD_CONFIG` naming the option. */
export function parseHeadroomConfig(input: unknown): HeadroomConfig {
  const parsed = HeadroomConfigSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join('.') || 'headroom';
    throw new MemoryCgroupError('E_BAD_CONFIG', `headroom.${where}: ${issue?.message ?? 'invalid'}`, { input });
  }
  return parsed.data;
}

/** Bytes kept free under `limitBytes`; Infinity for an unlimited cgroup (there is no edge to keep off). */
export function headroomBytes(limitBytes: number, config: HeadroomConfig = DEFAULT_HEADROOM): number {
  assertLimit(limitBytes);
  if (limitBytes === Infinity) return Infinity;
  return Math.max(config.minBytes, Math.ceil(limitBytes * config.fraction));
}

/** The usage mark: `limit − headroom`, never below 0; Infinity for an unlimited cgroup. */
export function usageMark(limitBytes: number, config: HeadroomConfig = DEFAULT_HEADROOM): number {
  if (limitBytes === Infinity) return Infinity;
  return Math.max(0, limitBytes - headroomBytes(limitBytes, config));
}

/** Bytes that can still be placed on the memory tier before usage reaches the mark (≥ 0). */
export function roomBelowMark(usageBytes: number, limitBytes: number, config: HeadroomConfig = DEFAULT_HEADROOM): number {
  if (!Number.isFinite(usageBytes) || usageBytes < 0) {
    throw new MemoryCgroupError('E_BAD_CONFIG', `usage must be a non-negative number of bytes, got ${usageBytes}`);
  }
  const mark = usageMark(limitBytes, config);
  return mark === Infinity ? Infinity : Math.max(0, mark - usageBytes);
}

function assertLimit(limitBytes: number): void {
  if (limitBytes !== Infinity && (!Number.isFinite(limitBytes) || limitBytes < 0)) {
    throw new MemoryCgroupError('E_BAD_CONFIG', `limit must be a non-negative number of bytes or Infinity, got ${limitBytes}`);
  }
}
