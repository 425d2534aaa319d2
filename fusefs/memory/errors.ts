import { errorGuard, LayerError } from '../../errors/index';

/**
 * Every failure of the memory-cgroup layer (cgroup files, the watcher, the OOM guard, the charged copy) carries a stable `code`; callers and tests branch on the
 * code, never on the message, which is for people.
 */
export const MEMORY_ERROR_CODES = [
  /** No memory cgroup at that path / for that pid, or it was removed while in use. */
  'E_NO_CGROUP',
  /** A cgroup control file could not be read or written (details carry path and errno). */
  'E_CGROUP_IO',
  /** The kernel refused a limit change because usage is above it (cgroup v1 answers EBUSY). */
  'E_CGROUP_BUSY',
  /** The operation does not exist on this cgroup version (e.g. pausing the OOM killer on v2). */
  'E_UNSUPPORTED',
  'E_BAD_CONFIG',
  /** The charged-copy helper could not be built, started, joined to its cgroup, or died. */
  'E_HELPER',
  /** A copy request failed inside the helper; details carry the errno. */
  'E_COPY',
  /** The object was closed. */
  'E_CLOSED',
] as const;
export type MemoryErrorCode = (typeof MEMORY_ERROR_CODES)[number];

export class MemoryCgroupError extends LayerError<MemoryErrorCode> {}

export const isMemoryCgroupError = errorGuard(MemoryCgroupError);

export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
