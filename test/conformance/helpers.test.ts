// The suite's own instruments: the native sys helpers fail like Node's fs, and the transcript
// comparison notices when two file systems really differ (so a green comparison means something).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSyscalls } from '../../fusefs/syscalls';
import { makeTmpfs, type TestDir } from '../support/tmpdirs';
import { skipping, tmpfsMountUnavailable } from '../support/capabilities';
import { errnoOf } from './common';
import { diffTranscripts, runTranscript, STANDARD_SCRIPT } from './transcript';

const sys = loadSyscalls();
const noTmpfs = tmpfsMountUnavailable();
if (noTmpfs) skipping('conformance helpers on tmpfs', noTmpfs);

describe.skipIf(noTmpfs !== undefined)('sys helpers', () => {
  let tmp: TestDir;
  beforeAll(async () => {
    tmp = await makeTmpfs({ size: '16m' });
  });
  afterAll(async () => {
    await tmp?.teardown();
  });

  it('errors carry the errno name as code, negative errno, syscall and path, like Node fs', () => {
    const missing = path.join(tmp.dir, 'missing');
    let caught: NodeJS.ErrnoException | undefined;
    try {
      sys.renameat2(missing, path.join(tmp.dir, 'x'), 0);
    } catch (error) {
      caught = error as NodeJS.ErrnoException;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught?.code).toBe('ENOENT');
    expect(caught?.errno).toBe(-2);
    expect(caught?.syscall).toBe('renameat2');
    expect(caught?.path).toBe(missing);
    // Node's own error for the same condition uses the same code.
    expect(errnoOf(() => fs.renameSync(missing, path.join(tmp.dir, 'x')))).toBe(caught?.code);
    // EOPNOTSUPP and ENOTSUP share a number; both APIs must call it ENOTSUP.
    fs.writeFileSync(path.join(tmp.dir, 'f'), 'x');
    expect(errnoOf(() => sys.setxattr(path.join(tmp.dir, 'f'), 'bogusnamespace.x', 'v'))).toBe('ENOTSUP');
  });

  it('caller mistakes are E_BAD_ARGUMENT, not an errno', () => {
    const bad = (fn: () => unknown) => errnoOf(fn);
    expect(bad(() => (sys.lseek as (...args: unknown[]) => number)('3', 0, 0))).toBe('E_BAD_ARGUMENT');
    expect(bad(() => sys.lseek(0, 1.5, 0))).toBe('E_BAD_ARGUMENT');
    expect(bad(() => sys.fallocate(0, 0, 2 ** 60, 1))).toBe('E_BAD_ARGUMENT');
    expect(bad(() => sys.mknod('a\0b', 0o100600, 0))).toBe('E_BAD_ARGUMENT');
    expect(bad(() => (sys.renameat2 as (...args: unknown[]) => void)('a'))).toBe('E_BAD_ARGUMENT');
  });

  it('mmap helpers refuse a range past EOF instead of raising SIGBUS', () => {
    const file = path.join(tmp.dir, 'small');
    fs.writeFileSync(file, Buffer.alloc(100, 1));
    const fd = fs.openSync(file, 'r+');
    try {
      expect(errnoOf(() => sys.mmapWriteRead(fd, 90, Buffer.alloc(20)))).toBe('E_MMAP_PAST_EOF');
      expect(sys.mmapWriteRead(fd, 90, Buffer.from('0123456789')).toString()).toBe('0123456789');
      expect(fs.readFileSync(file).subarray(90).toString()).toBe('0123456789');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('statfs agrees with Node’s statfs on the numbers both report', () => {
    const ours = sys.statfs(tmp.dir);
    const node = fs.statfsSync(tmp.dir);
    expect([ours.type, ours.bsize, ours.blocks, ours.files]).toEqual([node.type, node.bsize, node.blocks, node.files]);
    expect(ours.blocks * ours.bsize).toBe(16 * 1024 * 1024);
  });

  it('makedev composes major and minor numbers the glibc way', () => {
    expect(sys.makedev(1, 3)).toBe(259);
    expect(sys.makedev(0, 0)).toBe(0);
  });
});

describe.skipIf(noTmpfs !== undefined)('transcript comparison can tell file systems apart', () => {
  const mounts: TestDir[] = [];
  afterAll(async () => {
    for (const mount of mounts) await mount.teardown();
  });

  const transcriptOn = async (options: string[]) => {
    const mount = await makeTmpfs({ size: '64m', options });
    mounts.push(mount);
    return runTranscript(mount.dir, STANDARD_SCRIPT);
  };

  it('two plain tmpfs mounts agree', async () => {
    expect(diffTranscripts(await transcriptOn([]), await transcriptOn([]))).toEqual([]);
  });

  it('noexec shows up as EACCES on access(X_OK)', async () => {
    const diff = diffTranscripts(await transcriptOn([]), await transcriptOn(['noexec']));
    expect(diff.length).toBeGreaterThan(0);
    expect(diff.some((line) => line.startsWith('+') && line.includes('access') && line.includes('ERR EACCES'))).toBe(true);
  });

  it('an inode limit shows up as ENOSPC on creation', async () => {
    const diff = diffTranscripts(await transcriptOn([]), await transcriptOn(['nr_inodes=6']));
    expect(diff.some((line) => line.startsWith('+') && line.includes('ERR ENOSPC'))).toBe(true);
  });
});
