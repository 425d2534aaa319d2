import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { FusefsError } from '../errors';
import { MountId } from './messages';

/** What a restart needs to put a mount back where it was (taken over, or empty), and what cleanup must undo. */
export const MountRecord = z.object({
  id: MountId,
  path: z.string(),
  /** Where the FUSE session itself is mounted (private); `path` is a bind of it (see managed-mount.ts). */
  fusePath: z.string(),
  /** The daemon made the mount point directory: remove-mount and cleanup remove it too. */
  createdPath: z.boolean(),
  budget: z.number().int().nonnegative(),
  sizeQuota: z.number().int().nonnegative(),
  inodeQuota: z.number().int().nonnegative(),
  spillDir: z.string(),
  createdSpillDir: z.boolean(),
  memoryDir: z.string(),
  owner: z.string(),
  cgroup: z.string().nullable(),
  /** The function's profiled largest file (bytes) handed to the memory adapter; null: unknown. */
  sizeHint: z.number().int().nonnegative().nullable().default(null),
  oomPause: z.boolean().default(false),
  newFilesOnDisk: z.boolean(),
  /** A holder keeps the connection: a successor daemon takes the mount over with its files (issue 14). */
  restartable: z.boolean().default(false),
  /** The Docker container the mount serves (its manager link is joined again after a takeover). */
  containerId: z.string().nullable().default(null),
  createdAt: z.string(),
});
export type MountRecord = z.infer<typeof MountRecord>;

export const DaemonRecord = z.object({
  pid: z.number().int(),
  socket: z.string(),
  mountsDir: z.string(),
  /** We bind-mounted the parent onto itself (cleanup undoes it); false when it already was a mount. */
  madeParentMount: z.boolean(),
  startedAt: z.string(),
  metricsPort: z.number().int().nullable(),
});
export type DaemonRecord = z.infer<typeof DaemonRecord>;

/** Write-then-rename in the same directory, fsynced: a crash leaves the old or the new record, never half. */
export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeFileSync(fd, JSON.stringify(value, null, 2) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dirFd = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

export class MountRecords {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(id: string): string {
    return path.join(this.dir, `${MountId.parse(id)}.json`);
  }

  save(record: MountRecord): void {
    writeJsonAtomic(this.file(record.id), MountRecord.parse(record));
  }

  remove(id: string): void {
    fs.rmSync(this.file(id), { force: true });
  }

  /** Every readable record; unreadable ones are reported, not fatal (a restart must still recover the rest). */
  list(): { records: MountRecord[]; broken: Array<{ file: string; error: string }> } {
    return readRecords(this.dir);
  }
}

export function readRecords(dir: string): { records: MountRecord[]; broken: Array<{ file: string; error: string }> } {
  const records: MountRecord[] = [];
  const broken: Array<{ file: string; error: string }> = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return { records, broken };
  }
  for (const name of names.sort()) {
    const file = path.join(dir, name);
    if (name.endsWith('.tmp')) {
      fs.rmSync(file, { force: true }); // an interrupted atomic write: the record itself is intact
      continue;
    }
    if (!name.endsWith('.json')) continue;
    try {
      records.push(MountRecord.parse(JSON.parse(fs.readFileSync(file, 'utf8'))));
    } catch (e) {
      broken.push({ file, error: (e as Error).message });
    }
  }
  return { records, broken };
}

export function readDaemonRecord(file: string): DaemonRecord | null {
  try {
    return DaemonRecord.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FusefsError('E_DAEMON', `unreadable daemon record ${file}: ${(e as Error).message}`);
  }
}

/** A live process whose command line is an ephemera node daemon (a recycled pid is not one). */
export function isDaemonAlive(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('node-daemon');
  } catch {
    return false;
  }
}
