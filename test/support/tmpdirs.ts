// Fresh tmpfs mounts for tests: the reference file system the conformance and model suites are
// developed against and compared with.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface TestDir {
  dir: string;
  teardown: () => Promise<void>;
}

export interface TmpfsOptions {
  /** tmpfs size= option; default 512m (room for the 64 MiB large-file test and some slack). */
  size?: string;
  /** Extra -o options, e.g. 'huge=within_size'. */
  options?: string[];
}

const UMOUNT_TIMEOUT_MS = 10_000;

/**
 * Mounts a fresh tmpfs on a new directory under the system temp dir. The mount point and its
 * root are 0755 so a child running as an unprivileged uid can reach the tree (permission tests).
 * `teardown()` is idempotent: it unmounts (lazily if busy, so a leaked fd cannot wedge the
 * suite) and removes the mount point.
 */
export async function makeTmpfs(opts: TmpfsOptions = {}): Promise<TestDir> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-tmpfs-'));
  chmodSync(dir, 0o755);
  const options = ['mode=0755', `size=${opts.size ?? '512m'}`, ...(opts.options ?? [])].join(',');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'ephemera-test', dir], { stdio: 'pipe', timeout: UMOUNT_TIMEOUT_MS });
  } catch (cause) {
    rmdirSync(dir);
    const error = new Error(`mount -t tmpfs on ${dir} failed: ${String((cause as { stderr?: Buffer }).stderr ?? cause)}`);
    (error as NodeJS.ErrnoException).code = 'E_TMPFS_MOUNT';
    throw error;
  }
  let tornDown = false;
  return {
    dir,
    teardown: async () => {
      if (tornDown) return;
      tornDown = true;
      try {
        execFileSync('umount', [dir], { stdio: 'pipe', timeout: UMOUNT_TIMEOUT_MS });
      } catch {
        execFileSync('umount', ['-l', dir], { stdio: 'pipe', timeout: UMOUNT_TIMEOUT_MS });
      }
      rmdirSync(dir);
    },
  };
}
