// Lookup/getattr, setattr (mode, owner, times, size), access and statfs.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errnoOf, type SuiteContext, withFd } from './common';

export function defineMetadataTests(ctx: SuiteContext): void {
  const { p } = ctx;

  describe('lookup and stat', () => {
    it('a new file is a regular file of size 0, one link, owned by the caller', () => {
      fs.writeFileSync(p('f'), '');
      const st = fs.statSync(p('f'));
      expect(st.isFile()).toBe(true);
      expect(st.size).toBe(0);
      expect(st.nlink).toBe(1);
      expect(st.uid).toBe(process.getuid!());
      expect(st.gid).toBe(process.getgid!());
    });

    it('missing names, files used as directories and overlong names fail with the right errno', () => {
      fs.writeFileSync(p('f'), 'x');
      expect(errnoOf(() => fs.statSync(p('missing')))).toBe('ENOENT');
      expect(errnoOf(() => fs.statSync(p('missing', 'deeper')))).toBe('ENOENT');
      expect(errnoOf(() => fs.statSync(p('f', 'x')))).toBe('ENOTDIR');
      expect(errnoOf(() => fs.statSync(p('n'.repeat(256))))).toBe('ENAMETOOLONG');
      expect(errnoOf(() => fs.writeFileSync(p('n'.repeat(255)), 'ok'))).toBe('OK');
      expect(fs.statSync(p('n'.repeat(255))).size).toBe(2);
    });

    it('inode numbers are distinct per file and stable across lookups', () => {
      fs.writeFileSync(p('a'), 'a');
      fs.writeFileSync(p('b'), 'b');
      const a1 = fs.statSync(p('a')).ino;
      const b1 = fs.statSync(p('b')).ino;
      expect(a1).not.toBe(b1);
      expect(fs.statSync(p('a')).ino).toBe(a1);
      withFd(p('a'), 'r', (fd) => expect(fs.fstatSync(fd).ino).toBe(a1));
    });

    it('directory link counts are 2 plus the number of subdirectories', () => {
      fs.mkdirSync(p('d'));
      expect(fs.statSync(p('d')).nlink).toBe(2);
      fs.mkdirSync(p('d', 's1'));
      fs.mkdirSync(p('d', 's2'));
      fs.writeFileSync(p('d', 'file'), '');
      expect(fs.statSync(p('d')).nlink).toBe(4);
      fs.rmdirSync(p('d', 's1'));
      expect(fs.statSync(p('d')).nlink).toBe(3);
    });

    it('lstat sees the symlink, stat the target', () => {
      fs.writeFileSync(p('target'), '12345');
      fs.symlinkSync('target', p('link'));
      expect(fs.lstatSync(p('link')).isSymbolicLink()).toBe(true);
      expect(fs.lstatSync(p('link')).size).toBe('target'.length);
      expect(fs.statSync(p('link')).isFile()).toBe(true);
      expect(fs.statSync(p('link')).size).toBe(5);
    });
  });

  describe('setattr', () => {
    it('chmod sets every permission bit including setuid, setgid and sticky, and bumps ctime', async () => {
      fs.writeFileSync(p('f'), 'x');
      const before = fs.statSync(p('f'), { bigint: true }).ctimeNs;
      await new Promise((resolve) => setTimeout(resolve, 15));
      for (const mode of [0o000, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o7777]) {
        fs.chmodSync(p('f'), mode);
        expect(fs.statSync(p('f')).mode & 0o7777).toBe(mode);
      }
      expect(fs.statSync(p('f'), { bigint: true }).ctimeNs).toBeGreaterThan(before);
      fs.mkdirSync(p('d'));
      fs.chmodSync(p('d'), 0o1733);
      expect(fs.statSync(p('d')).mode & 0o7777).toBe(0o1733);
      expect(fs.statSync(p('d')).isDirectory()).toBe(true);
    });

    it('fchmod through an open descriptor', () => {
      withFd(p('f'), 'w', (fd) => {
        fs.fchmodSync(fd, 0o640);
        expect(fs.fstatSync(fd).mode & 0o7777).toBe(0o640);
      });
      expect(fs.statSync(p('f')).mode & 0o7777).toBe(0o640);
    });

    it('chown changes owner and group; -1 leaves a field alone', () => {
      fs.writeFileSync(p('f'), 'x');
      fs.chownSync(p('f'), 1000, 1001);
      let st = fs.statSync(p('f'));
      expect([st.uid, st.gid]).toEqual([1000, 1001]);
      fs.chownSync(p('f'), -1, 1002);
      st = fs.statSync(p('f'));
      expect([st.uid, st.gid]).toEqual([1000, 1002]);
      fs.chownSync(p('f'), 0, -1);
      st = fs.statSync(p('f'));
      expect([st.uid, st.gid]).toEqual([0, 1002]);
      fs.symlinkSync('f', p('l'));
      fs.lchownSync(p('l'), 1003, 1003);
      expect(fs.lstatSync(p('l')).uid).toBe(1003);
      expect(fs.statSync(p('f')).uid).toBe(0);
    });

    it('utimes sets atime and mtime exactly (to the millisecond), also far in the past and future', () => {
      fs.writeFileSync(p('f'), 'x');
      for (const [atime, mtime] of [
        [1_000_000_000.25, 1_234_567_890.5],
        [0, 1],
        [4_102_444_800.125, 2_000_000_000],
      ] as const) {
        fs.utimesSync(p('f'), atime, mtime);
        const st = fs.statSync(p('f'));
        expect(st.atimeMs).toBe(atime * 1000);
        expect(st.mtimeMs).toBe(mtime * 1000);
      }
      withFd(p('f'), 'r+', (fd) => {
        fs.futimesSync(fd, 1_500_000_000, 1_600_000_000);
        expect(fs.fstatSync(fd).mtimeMs).toBe(1_600_000_000_000);
      });
    });

    it('writing and truncating update mtime and ctime; reading does not change mtime', async () => {
      fs.writeFileSync(p('f'), 'x');
      fs.utimesSync(p('f'), 1_000_000_000, 1_000_000_000);
      fs.readFileSync(p('f'));
      expect(fs.statSync(p('f')).mtimeMs).toBe(1_000_000_000_000);
      fs.appendFileSync(p('f'), 'more');
      const afterWrite = fs.statSync(p('f'));
      expect(afterWrite.mtimeMs).toBeGreaterThan(1_000_000_000_000);
      fs.utimesSync(p('f'), 1_000_000_000, 1_000_000_000);
      fs.truncateSync(p('f'), 2);
      expect(fs.statSync(p('f')).mtimeMs).toBeGreaterThan(1_000_000_000_000);
    });

    it('truncate extends with zeros, shrinks, and empties; ftruncate on a read-only fd fails', () => {
      fs.writeFileSync(p('f'), 'hello world');
      fs.truncateSync(p('f'), 5);
      expect(fs.readFileSync(p('f'), 'latin1')).toBe('hello');
      fs.truncateSync(p('f'), 10_000);
      const grown = fs.readFileSync(p('f'));
      expect(grown.length).toBe(10_000);
      expect(grown.subarray(0, 5).toString()).toBe('hello');
      expect(grown.subarray(5).every((b) => b === 0)).toBe(true);
      withFd(p('f'), 'r+', (fd) => {
        fs.ftruncateSync(fd, 3);
        expect(fs.fstatSync(fd).size).toBe(3);
      });
      expect(fs.readFileSync(p('f'), 'latin1')).toBe('hel');
      fs.truncateSync(p('f'), 0);
      expect(fs.statSync(p('f')).size).toBe(0);
      withFd(p('f'), 'r', (fd) => expect(errnoOf(() => fs.ftruncateSync(fd, 1))).toBe('EINVAL'));
      expect(errnoOf(() => fs.truncateSync(p('missing'), 1))).toBe('ENOENT');
      fs.mkdirSync(p('d'));
      expect(errnoOf(() => fs.truncateSync(p('d'), 1))).toBe('EISDIR');
    });

    it('shrinking then growing does not resurrect old bytes', () => {
      fs.writeFileSync(p('f'), Buffer.alloc(20_000, 0xab));
      fs.truncateSync(p('f'), 100);
      fs.truncateSync(p('f'), 20_000);
      const data = fs.readFileSync(p('f'));
      expect(data.subarray(0, 100).every((b) => b === 0xab)).toBe(true);
      expect(data.subarray(100).every((b) => b === 0)).toBe(true);
    });
  });

  describe('access', () => {
    it('F_OK, R_OK, W_OK and X_OK as root follow the mode bits the way the kernel does for root', () => {
      fs.writeFileSync(p('f'), 'x');
      fs.chmodSync(p('f'), 0o000);
      expect(errnoOf(() => fs.accessSync(p('f'), fs.constants.F_OK))).toBe('OK');
      expect(errnoOf(() => fs.accessSync(p('f'), fs.constants.R_OK | fs.constants.W_OK))).toBe(
        process.getuid!() === 0 ? 'OK' : 'EACCES',
      );
      // Root may execute only when some x bit is set.
      expect(errnoOf(() => fs.accessSync(p('f'), fs.constants.X_OK))).toBe('EACCES');
      fs.chmodSync(p('f'), 0o744);
      expect(errnoOf(() => fs.accessSync(p('f'), fs.constants.X_OK))).toBe('OK');
      expect(errnoOf(() => fs.accessSync(p('missing'), fs.constants.F_OK))).toBe('ENOENT');
    });
  });

  describe('statfs', () => {
    it('reports a consistent shape, and writing data lowers the free blocks', () => {
      const before = ctx.sys.statfs(ctx.dir());
      for (const key of ['bsize', 'blocks', 'bfree', 'bavail', 'files', 'ffree', 'namelen'] as const) {
        expect(Number.isSafeInteger(before[key]), key).toBe(true);
        expect(before[key], key).toBeGreaterThanOrEqual(0);
      }
      expect(before.bsize).toBeGreaterThan(0);
      expect(before.blocks).toBeGreaterThan(0);
      expect(before.bfree).toBeLessThanOrEqual(before.blocks);
      expect(before.bavail).toBeLessThanOrEqual(before.bfree);
      expect(before.ffree).toBeLessThanOrEqual(before.files);
      expect(before.namelen).toBe(255);
      const node = fs.statfsSync(ctx.dir());
      expect(node.bsize).toBe(before.bsize);

      const eightMiB = 8 << 20;
      withFd(p('big'), 'w', (fd) => {
        fs.writeSync(fd, Buffer.alloc(eightMiB, 1));
        fs.fsyncSync(fd);
      });
      const after = ctx.sys.statfs(ctx.dir());
      expect((before.bfree - after.bfree) * after.bsize).toBeGreaterThanOrEqual(eightMiB / 2);
      fs.unlinkSync(p('big'));
      const freed = ctx.sys.statfs(ctx.dir());
      expect((freed.bfree - after.bfree) * freed.bsize).toBeGreaterThanOrEqual(eightMiB / 2);
    });
  });
}
