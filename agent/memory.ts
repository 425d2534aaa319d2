import { readFileSync } from 'node:fs';

/** Fraction of the node's memory an agent offers for function containers unless told otherwise. */
export const DEFAULT_FUNCTION_MEMORY_FRACTION = 0.75;

/** MemTotal from /proc/meminfo, bytes. */
export function memTotalBytes(meminfo = '/proc/meminfo'): number {
  const m = /^MemTotal:\s+(\d+)\s+kB$/m.exec(readFileSync(meminfo, 'utf8'));
  if (!m) throw new Error(`no MemTotal line in ${meminfo}`);
  return Number(m[1]) * 1024;
}

/**
 * The default N_lim: the part of the machine set aside for functions (the rest is the OS, dockerd,
 * the node daemon). Several agents on one machine should each be given `--node-limit` instead.
 */
export function defaultNodeLimitBytes(fraction = DEFAULT_FUNCTION_MEMORY_FRACTION, meminfo?: string): number {
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`memory fraction must be in (0, 1], got ${fraction}`);
  return Math.floor((memTotalBytes(meminfo) * fraction) / 4096) * 4096;
}
