import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../engine/index';
import { ControllerError, errorMessage, issuesFrom } from './errors';

/**
 * The deployed functions and their profiles, durable in `<stateDir>/functions.json`. Every change
 * replaces the file atomically (write a temporary, fsync, rename, fsync the directory), so a crash
 * leaves the old or the new file, never a torn one; a restarted controller starts from it.
 */

export const ProfileRecordSchema = z.object({
  /** U: peak memory of one invocation, bytes. */
  peakMemoryBytes: z.number().int().nonnegative(),
  /** F: largest file one invocation left in /tmp, bytes. */
  largestFileBytes: z.number().int().nonnegative(),
  /** `profiled`: a profiling run on a node; `declared`: given at deploy (as the original's offline trace). */
  source: z.enum(['profiled', 'declared']),
  /** The node that ran the profiling run. */
  node: z.string().optional(),
  inputs: z.number().int().nonnegative(),
  at: z.string(),
});
export type ProfileRecord = z.infer<typeof ProfileRecordSchema>;

export const FunctionRecordSchema = z.object({
  tenant: z.string().min(1),
  name: z.string().min(1),
  image: z.string().min(1),
  command: z.array(z.string()).min(1),
  /** T_lim: the container memory limit every invocation runs under. */
  limitBytes: z.number().int().positive(),
  profile: ProfileRecordSchema,
  deployedAt: z.string(),
});
export type FunctionRecord = z.infer<typeof FunctionRecordSchema>;

const FileSchema = z.object({ version: z.literal(1), functions: z.array(FunctionRecordSchema) });

/** T_mem = U + F, raw (no safety factor), as the original scheduler and the policy's TaskSpec take it. */
export function demandBytes(fn: FunctionRecord): number {
  return fn.profile.peakMemoryBytes + fn.profile.largestFileBytes;
}

export function functionKey(tenant: string, name: string): string {
  return `${tenant}/${name}`;
}

export class FunctionStore {
  readonly file: string;
  private readonly functions = new Map<string, FunctionRecord>();
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(file: string) {
    this.file = file;
  }

  /** Loads (or starts) the store in `stateDir`; an unreadable or invalid file is E_STATE, never ignored. */
  static async open(stateDir: string): Promise<FunctionStore> {
    const store = new FunctionStore(path.join(stateDir, 'functions.json'));
    let text: string | undefined;
    try {
      text = await readFile(store.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ControllerError('E_STATE', `cannot read ${store.file}: ${errorMessage(err)}`);
      }
    }
    if (text !== undefined) {
      let document: unknown;
      try {
        document = JSON.parse(text);
      } catch (err) {
        throw new ControllerError('E_STATE', `${store.file} is not valid JSON: ${errorMessage(err)}`);
      }
      const parsed = FileSchema.safeParse(document);
      if (!parsed.success) {
        const issues = issuesFrom('file', parsed.error.issues);
        throw new ControllerError('E_STATE', `${store.file} is invalid: ${issues.map((i) => `${i.path}: ${i.reason}`).join('; ')}`, issues);
      }
      for (const fn of parsed.data.functions) store.functions.set(functionKey(fn.tenant, fn.name), fn);
    }
    return store;
  }

  get(tenant: string, name: string): FunctionRecord | undefined {
    return this.functions.get(functionKey(tenant, name));
  }

  list(): FunctionRecord[] {
    return [...this.functions.values()].sort((a, b) => functionKey(a.tenant, a.name).localeCompare(functionKey(b.tenant, b.name)));
  }

  /** Stores the record durably; resolves once the file on disk holds it. */
  put(fn: FunctionRecord): Promise<void> {
    this.functions.set(functionKey(fn.tenant, fn.name), fn);
    return this.persist();
  }

  /** Removes the record durably; false when there was none. */
  async delete(tenant: string, name: string): Promise<boolean> {
    if (!this.functions.delete(functionKey(tenant, name))) return false;
    await this.persist();
    return true;
  }

  private persist(): Promise<void> {
    const snapshot = `${JSON.stringify({ version: 1, functions: this.list() }, null, 2)}\n`;
    // Serialised, and each write carries the whole map as of its call, so the last write wins.
    const next = this.chain.then(() => writeFileAtomic(this.file, snapshot));
    this.chain = next.catch(() => undefined);
    return next;
  }
}
