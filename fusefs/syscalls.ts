// Typed view of the addon's `sys` object: synchronous wrappers over syscalls Node's fs lacks
// (renameat2, fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, mknod, xattrs, statfs, mmap).
// Failures are Errors whose `code` is the errno name (EEXIST, ENOTSUP…), as with Node's fs, so a
// test can compare `err.code` whichever API raised it. Caller mistakes carry `E_BAD_ARGUMENT`.
import { existsSync } from 'node:fs';
import path from 'node:path';

export interface StatfsResult {
  type: number;
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namelen: number;
}

export interface SyscallConstants {
  RENAME_NOREPLACE: number;
  RENAME_EXCHANGE: number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
  SEEK_SET: number;
  SEEK_CUR: number;
  SEEK_END: number;
  SEEK_DATA: number;
  SEEK_HOLE: number;
  XATTR_CREATE: number;
  XATTR_REPLACE: number;
}

export interface Syscalls {
  renameat2(oldPath: string, newPath: string, flags: number): void;
  fallocate(fd: number, mode: number, offset: number, len: number): void;
  /** Returns the resulting offset (SEEK_DATA/SEEK_HOLE answer ENXIO at or past EOF). */
  lseek(fd: number, offset: number, whence: number): number;
  /** A null offset uses and advances the descriptor's own offset. Returns bytes copied. */
  copyFileRange(fdIn: number, offIn: number | null, fdOut: number, offOut: number | null, len: number): number;
  mknod(path: string, mode: number, dev: number): void;
  setxattr(path: string, name: string, value: Uint8Array | string, flags?: number): void;
  getxattr(path: string, name: string): Buffer;
  listxattr(path: string): string[];
  removexattr(path: string, name: string): void;
  statfs(path: string): StatfsResult;
  /**
   * Stores `data` at `offset` through a MAP_SHARED mapping, msyncs, returns the bytes read back
   * through that mapping. The range must lie inside the file (`E_MMAP_PAST_EOF` otherwise, instead
   * of a SIGBUS).
   */
  mmapWriteRead(fd: number, offset: number, data: Uint8Array | string): Buffer;
  /** Reads `length` bytes at `offset` through a fresh MAP_SHARED mapping. */
  mmapRead(fd: number, offset: number, length: number): Buffer;
  /** open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode) → fd. */
  openTmpfile(dir: string, mode: number): number;
  /** linkat(fd, "", AT_FDCWD, newPath, AT_EMPTY_PATH). */
  linkFd(fd: number, newPath: string): void;
  makedev(major: number, minor: number): number;
  constants: SyscallConstants;
}

const ADDON_RELATIVE = path.join('fuse-store', 'build', 'Release', 'fuse_store.node');

// The same module runs from the source tree (vitest: fusefs/) and from dist/fusefs/, so the addon
// is looked for one and two levels up.
function addonPath(): string {
  const candidates = [path.resolve(__dirname, '..', ADDON_RELATIVE), path.resolve(__dirname, '..', '..', ADDON_RELATIVE)];
  const found = candidates.find((candidate) => existsSync(candidate));
  if (found === undefined) {
    const error = new Error(`native addon not built (looked at ${candidates.join(', ')}); run npm run build:native`);
    (error as NodeJS.ErrnoException).code = 'E_ADDON_MISSING';
    throw error;
  }
  return found;
}

let cached: Syscalls | undefined;

export function loadSyscalls(): Syscalls {
  if (cached === undefined) {
    const addon = require(addonPath()) as { sys?: Syscalls };
    if (addon.sys === undefined || typeof addon.sys.renameat2 !== 'function') {
      const error = new Error('native addon has no sys helpers; rebuild with npm run build:native');
      (error as NodeJS.ErrnoException).code = 'E_ADDON_MISSING';
      throw error;
    }
    cached = addon.sys;
  }
  return cached;
}
