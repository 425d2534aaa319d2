import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { PolicyError, type PolicyIssue } from './errors';

/** Every size in the policy layer is in bytes; every time is in milliseconds of one monotonic clock. */
export const MiB = 1024 * 1024;

/**
 * Memory kept free under a container's limit: max(minBytes, fraction · limit). One piece of the
 * policy schema, also what the memory adapter validates a headroom option with.
 */
export const HeadroomSchema = z
  .object({
    minBytes: z.number().int().nonnegative().default(8 * MiB),
    fraction: z.number().min(0).lt(1).default(0.05),
  })
  .strict();

/**
 * The one schema for the whole policy. Defaults are the thesis' constants (chapter 3–4) unless a
 * comment says why they differ. Every section may be omitted; a partial file fills the rest with defaults.
 */
export const PolicyConfigSchema = z
  .object({
    /** Profiled peak memory U and largest file F are multiplied by this before any comparison (thesis 4.3: 1.1). */
    safetyFactor: z.number().min(1).max(4).default(1.1),

    pools: z
      .object({
        /** Off = the thesis' "no sharing" control: every container is self-sufficient, nothing is lent. */
        sharing: z.boolean().default(true),
        /** Harvest pool when demand < harvestThreshold · M_init (thesis: 0.9). */
        harvestThreshold: z.number().gt(0).max(1).default(0.9),
        /**
         * What "demand" means in the pool thresholds. `scaled` = U' + F' = 1.1·U + 1.1·F, as the thesis text
         * says; `raw` = U + F, as the original code compares. They differ only for containers whose
         * demand lies within 10 % of a threshold. Spare and need are always computed on scaled values.
         */
        poolCompare: z.enum(['scaled', 'raw']).default('scaled'),
        /**
         * Which containers may lend to each other: `tenant` (the thesis' choice), or the narrower
         * `function` / `workflow` (the notebook's "single-function" and "single-workflow" sharing). A
         * scope never crosses tenants.
         */
        scope: z.enum(['tenant', 'function', 'workflow']).default('tenant'),
      })
      .prefault({}),

    /** Memory kept free under a container's limit: max(minBytes, fraction · limit). */
    headroom: HeadroomSchema.prefault({}),

    placement: z
      .object({
        /**
         * Tier for a file created without a size hint. A file that outgrows memory while open cannot be
         * rescued on cgroup v1 (design.md: the write fails with ENOMEM), so unknown sizes start on disk.
         */
        unknownSizeTier: z.enum(['memory', 'disk']).default('disk'),
        /**
         * Under a container's memory cgroup, the memory tier and the disk tier's page cache share one
         * limit: a disk-tier file open now, or opened or closed within this window, is in the working
         * set and is owed page cache as large as it is. Memory-tier files (shmem, never reclaimed)
         * are placed, promoted and kept only beside that share, so one file pinned in memory never
         * leaves the file being worked on to thrash (bench impact, 2 × 128 MiB at 150 MiB: a
         * promotion during the read phase made it 49.5 s against 28 s on a plain directory). The
         * window bridges a function's steps (close one file, open the next; one invocation and the
         * next); a file idle longer is cold and may be promoted past it. 0 = open files only.
         */
        workingSetWindowMs: z.number().int().nonnegative().default(5_000),
      })
      .prefault({}),

    eviction: z
      .object({
        /**
         * An inode moved between tiers less than this long ago is neither evicted nor promoted again. The
         * original used 20 units of process CPU time behind a 10 µs poll; our moves copy whole files
         * (~50–100 ms for 256 MiB), so the window is wall time and much longer.
         */
        antiThrashWindowMs: z.number().int().nonnegative().default(2000),
        /** The original only brings back open files; closed ones may be promoted too when this is on. */
        promoteClosed: z.boolean().default(false),
        /**
         * Closed files are promoted only once no file was opened or closed for this long. A function
         * writing file after file would otherwise write its next file (dirty page cache, which cgroup
         * v1 cannot reclaim until written back) beside the promoted, unreclaimable copy of the last
         * one: measured, a charged copy OOM-killed that way when a loan raised the limit mid-run.
         */
        promoteQuietMs: z.number().int().nonnegative().default(1000),
      })
      .prefault({}),

    writeback: z
      .object({
        /**
         * Under a cgroup, dirty disk-tier page cache below this is left to the kernel's flusher; above
         * it the tier keeper writes the disk tier back before it counts the room (cgroup v1 cannot
         * reclaim dirty pages, and has no per-cgroup dirty throttling).
         */
        floorBytes: z.number().int().nonnegative().default(8 * MiB),
      })
      .prefault({}),

    lending: z
      .object({
        /** Loan sizes are rounded to this (the kernel keeps cgroup limits in pages). */
        granularityBytes: z.number().int().positive().default(4096),
        /** A return the borrower's own memory blocks is retried; after this many tries it raises an alarm. */
        maxReturnAttempts: z.number().int().positive().default(3),
      })
      .prefault({}),

    safeguard: z
      .object({
        /** After a memory alarm the container may not lend for this long. */
        coolDownMs: z.number().int().nonnegative().default(60_000),
        /**
         * An OOM-paused container is stalled at its limit and cannot say how much more it needs: it is
         * granted max(pausedGrantMinBytes, pausedGrantFraction · limit) beyond what it lent out.
         */
        pausedGrantMinBytes: z.number().int().nonnegative().default(16 * MiB),
        pausedGrantFraction: z.number().min(0).max(4).default(0.25),
      })
      .prefault({}),

    scheduler: z
      .object({
        /**
         * `complementarity`: the original code's rule that produced thesis table 5.3; `min-gap`: the
         * thesis text's |(N_req + T_mem) − (N_alloc + T_lim)|; `most-free`: the baseline.
         */
        scoring: z.enum(['complementarity', 'min-gap', 'most-free']).default('complementarity'),
        /** From this many nodes on, callers should use the indexed cluster (same choices, O(log n) updates). */
        indexedFromNodes: z.number().int().positive().default(256),
      })
      .prefault({}),
  })
  .strict();

export type PolicyConfig = z.infer<typeof PolicyConfigSchema>;
export type PolicyConfigInput = z.input<typeof PolicyConfigSchema>;
export type Scoring = PolicyConfig['scheduler']['scoring'];
export type PoolScope = PolicyConfig['pools']['scope'];

export const DEFAULT_POLICY_CONFIG: PolicyConfig = PolicyConfigSchema.parse({});

function issuesOf(error: z.ZodError): PolicyIssue[] {
  return error.issues.map((issue) => ({
    path: issue.path.length === 0 ? '(root)' : issue.path.map(String).join('.'),
    reason: issue.message,
  }));
}

function badConfig(source: string, issues: PolicyIssue[]): PolicyError {
  const listing = issues.map((i) => `  ${i.path}: ${i.reason}`).join('\n');
  return new PolicyError('E_BAD_CONFIG', `invalid policy configuration ${source}:\n${listing}`, issues);
}

/** Validates an in-memory configuration (e.g. received over a link); throws E_BAD_CONFIG listing every issue. */
export function parsePolicyConfig(input: unknown, source = '(object)'): PolicyConfig {
  const result = PolicyConfigSchema.safeParse(input ?? {});
  if (!result.success) throw badConfig(source, issuesOf(result.error));
  return result.data;
}

/**
 * Reads a JSON (`.json`) or YAML (anything else; YAML is a superset of JSON) policy file. An unreadable
 * file, a syntax error or any schema issue raises E_BAD_CONFIG with every issue's path and reason.
 */
export function loadPolicyConfig(path: string): PolicyConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw badConfig(path, [{ path: '(root)', reason: `cannot read file: ${(err as Error).message}` }]);
  }
  let document: unknown;
  if (extname(path).toLowerCase() === '.json') {
    try {
      document = JSON.parse(text);
    } catch (err) {
      throw badConfig(path, [{ path: '(root)', reason: `JSON syntax: ${(err as Error).message}` }]);
    }
  } else {
    try {
      document = parseYaml(text, { prettyErrors: true });
    } catch (err) {
      throw badConfig(path, [{ path: '(root)', reason: `YAML syntax: ${(err as Error).message}` }]);
    }
  }
  return parsePolicyConfig(document, path);
}

/** Memory kept free under a limit: max(minBytes, fraction · limit), in whole bytes. */
export function headroomBytes(limitBytes: number, config: PolicyConfig): number {
  return Math.max(config.headroom.minBytes, Math.ceil(config.headroom.fraction * limitBytes));
}

/**
 * A profiled figure times the safety factor, rounded up so the margin never shrinks. (The original
 * truncated MB to int; in bytes the difference is under one byte.)
 */
export function scaled(bytes: number, config: PolicyConfig): number {
  const exact = config.safetyFactor * bytes;
  const nearest = Math.round(exact);
  // 1.1 · 10 is 11.000000000000002 in binary floating point: that is 11, not 12.
  if (Math.abs(exact - nearest) <= 1e-9 * Math.max(1, Math.abs(exact))) return nearest;
  return Math.ceil(exact);
}
