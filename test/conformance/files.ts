// Regular-file operations: create flags, mknod, read/write at offsets, sparse files and
// SEEK_DATA/SEEK_HOLE, fsync, fallocate, copy_file_range, unlinked-but-open files, O_TMPFILE, mmap.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errnoOf, patternBytes, preadExact, pwriteAll, type SuiteContext, withFd } from './common';

const { O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_RDWR, O_WRONLY, O_RDONLY, O_DIRECTORY, O_NOFOLLOW } = fs.constants;
const PAGE = 4096;

export function defineFileTests(ctx: SuiteContext): void {
  const { p } = ctx;

  describe('create and open flags', () => {
    it('O_CREAT|O_EXCL creates once, then EEXIST, also for a dangling symlink', () => {
      withFd(p('f'), O_CREAT | O_EXCL | O_RDWR, () => undefined, 0o640);
      expect(fs.statSync(p('f')).mode & 0o777).toBe(0o640);
      expect(errnoOf(() => fs.openSync(p('f'), O_CREAT | O_EXCL | O_RDWR))).toBe('EEXIST');
      fs.symlinkSync('nowhere', p('dangling'));
      expect(errnoOf(() => fs.openSync(p('dangling'), O_CREAT | O_EXCL | O_RDWR))).toBe('EEXIST');
      expect(fs.existsSync(p('nowhere'))).toBe(false);
    });

    it('O_CREAT without O_EXCL through a dangling symlink creates the target', () => {
      fs.symlinkSync('target', p('link'));
      withFd(p('link'), O_CREAT | O_WRONLY, (fd) => fs.writeSync(fd, 'via link'), 0o600);
      expect(fs.readFileSync(p('target'), 'utf8')).toBe('via link');
      expect(errnoOf(() => fs.openSync(p('link'), O_RDONLY | O_NOFOLLOW))).toBe('ELOOP');
    });

    it('the creation mode is masked by the umask', () => {
      const umask = process.umask();
      withFd(p('f'), O_CREAT | O_WRONLY, () => undefined, 0o666);
      expect(fs.statSync(p('f')).mode & 0o777).toBe(0o666 & ~umask);
      fs.mkdirSync(p('d'), 0o777);
      expect(fs.statSync(p('d')).mode & 0o777).toBe(0o777 & ~umask);
    });

    it('O_TRUNC empties an existing file and keeps its inode', () => {
      fs.writeFileSync(p('f'), 'some old content');
      const ino = fs.statSync(p('f')).ino;
      withFd(p('f'), O_WRONLY | O_TRUNC, (fd) => expect(fs.fstatSync(fd).size).toBe(0));
      expect(fs.statSync(p('f')).size).toBe(0);
      expect(fs.statSync(p('f')).ino).toBe(ino);
      fs.writeFileSync(p('f'), 'abc');
      expect(fs.readFileSync(p('f'), 'utf8')).toBe('abc');
    });

    it('O_APPEND writes land at the current end, even after another fd grew the file', () => {
      fs.writeFileSync(p('f'), 'start;');
      const appender = fs.openSync(p('f'), O_WRONLY | O_APPEND);
      const other = fs.openSync(p('f'), O_RDWR);
      try {
        fs.writeSync(appender, 'one;');
        pwriteAll(other, 10, Buffer.from('OTHER;'));
        fs.writeSync(appender, 'two;');
        // Linux appends even for pwrite on an O_APPEND descriptor (pwrite(2) BUGS).
        fs.writeSync(appender, Buffer.from('three;'), 0, 6, 0);
      } finally {
        fs.closeSync(appender);
        fs.closeSync(other);
      }
      expect(fs.readFileSync(p('f'), 'utf8')).toBe('start;one;OTHER;two;three;');
    });

    it('opening wrong kinds fails: ENOENT, EISDIR, ENOTDIR', () => {
      fs.mkdirSync(p('d'));
      fs.writeFileSync(p('f'), '');
      expect(errnoOf(() => fs.openSync(p('missing'), O_RDONLY))).toBe('ENOENT');
      expect(errnoOf(() => fs.openSync(p('d'), O_WRONLY))).toBe('EISDIR');
      expect(errnoOf(() => fs.openSync(p('d'), O_RDWR | O_CREAT))).toBe('EISDIR');
      expect(errnoOf(() => fs.openSync(p('f'), O_RDONLY | O_DIRECTORY))).toBe('ENOTDIR');
      expect(errnoOf(() => fs.openSync(p('missing', 'f'), O_CREAT | O_WRONLY))).toBe('ENOENT');
    });

    it('creating a file updates the parent directory mtime', () => {
      fs.mkdirSync(p('d'));
      fs.utimesSync(p('d'), 1_000_000_000, 1_000_000_000);
      fs.writeFileSync(p('d', 'new'), '');
      expect(fs.statSync(p('d')).mtimeMs).toBeGreaterThan(1_000_000_000_000);
    });
  });

  describe('mknod', () => {
    it('creates a regular file that reads and writes like any other; EEXIST on an existing name', () => {
      ctx.sys.mknod(p('reg'), fs.constants.S_IFREG | 0o640, 0);
      const st = fs.statSync(p('reg'));
      expect(st.isFile()).toBe(true);
      expect(st.mode & 0o777).toBe(0o640 & ~process.umask());
      expect(st.size).toBe(0);
      fs.writeFileSync(p('reg'), 'data');
      expect(fs.readFileSync(p('reg'), 'utf8')).toBe('data');
      expect(errnoOf(() => ctx.sys.mknod(p('reg'), fs.constants.S_IFREG | 0o600, 0))).toBe('EEXIST');
      expect(errnoOf(() => ctx.sys.mknod(p('missing', 'reg'), fs.constants.S_IFREG | 0o600, 0))).toBe('ENOENT');
    });

    it('a FIFO either works as a FIFO or is refused cleanly, never half-made', () => {
      const result = errnoOf(() => ctx.sys.mknod(p('fifo'), fs.constants.S_IFIFO | 0o600, 0));
      if (result === 'OK') {
        expect(fs.lstatSync(p('fifo')).isFIFO()).toBe(true);
        expect(fs.readdirSync(ctx.dir(), { withFileTypes: true }).find((e) => e.name === 'fifo')?.isFIFO()).toBe(true);
      } else {
        expect(['EPERM', 'ENOSYS', 'ENOTSUP', 'EINVAL']).toContain(result);
        expect(fs.existsSync(p('fifo'))).toBe(false);
      }
    });
  });

  describe('read and write', () => {
    it('pwrite and pread at unaligned offsets across page boundaries', () => {
      const a = patternBytes(10_000, 1);
      const b = patternBytes(70_000, 2);
      withFd(p('f'), 'w+', (fd) => {
        pwriteAll(fd, 0, a);
        pwriteAll(fd, PAGE - 7, b);
        const expected = Buffer.alloc(PAGE - 7 + b.length);
        a.copy(expected, 0);
        b.copy(expected, PAGE - 7);
        expect(fs.fstatSync(fd).size).toBe(expected.length);
        expect(preadExact(fd, 0, expected.length).equals(expected)).toBe(true);
        expect(preadExact(fd, 12_345, 999).equals(expected.subarray(12_345, 12_345 + 999))).toBe(true);
        expect(preadExact(fd, expected.length - 10, 100).equals(expected.subarray(expected.length - 10))).toBe(true);
        expect(fs.readSync(fd, Buffer.alloc(10), 0, 10, expected.length)).toBe(0);
        expect(fs.readSync(fd, Buffer.alloc(10), 0, 10, expected.length + 1_000_000)).toBe(0);
      });
    });

    it('writing past EOF leaves a zero-filled gap', () => {
      withFd(p('f'), 'w+', (fd) => {
        pwriteAll(fd, 0, Buffer.from('head'));
        pwriteAll(fd, 100_000, Buffer.from('tail'));
        const data = preadExact(fd, 0, 200_000);
        expect(data.length).toBe(100_004);
        expect(data.subarray(0, 4).toString()).toBe('head');
        expect(data.subarray(4, 100_000).every((x) => x === 0)).toBe(true);
        expect(data.subarray(100_000).toString()).toBe('tail');
      });
    });

    it('sequential writes and reads advance the file position; SEEK_CUR and SEEK_END', () => {
      const { SEEK_CUR, SEEK_END, SEEK_SET } = ctx.sys.constants;
      withFd(p('f'), 'w+', (fd) => {
        fs.writeSync(fd, 'abc');
        fs.writeSync(fd, 'def');
        expect(ctx.sys.lseek(fd, 0, SEEK_CUR)).toBe(6);
        expect(ctx.sys.lseek(fd, -2, SEEK_END)).toBe(4);
        const buf = Buffer.alloc(10);
        expect(fs.readSync(fd, buf, 0, 10, null)).toBe(2);
        expect(buf.subarray(0, 2).toString()).toBe('ef');
        expect(ctx.sys.lseek(fd, 1, SEEK_SET)).toBe(1);
        expect(fs.readSync(fd, buf, 0, 3, null)).toBe(3);
        expect(buf.subarray(0, 3).toString()).toBe('bcd');
        expect(errnoOf(() => ctx.sys.lseek(fd, -1, SEEK_SET))).toBe('EINVAL');
      });
    });

    it('two descriptors on one file see each other’s writes at once', () => {
      fs.writeFileSync(p('f'), '');
      const w = fs.openSync(p('f'), 'r+');
      const r = fs.openSync(p('f'), 'r');
      try {
        pwriteAll(w, 0, Buffer.from('first'));
        expect(preadExact(r, 0, 100).toString()).toBe('first');
        pwriteAll(w, 2, Buffer.from('XY'));
        expect(preadExact(r, 0, 100).toString()).toBe('fiXYt');
      } finally {
        fs.closeSync(w);
        fs.closeSync(r);
      }
    });

    it('reading a write-only fd and writing a read-only fd fail with EBADF', () => {
      fs.writeFileSync(p('f'), 'x');
      withFd(p('f'), O_WRONLY, (fd) => expect(errnoOf(() => fs.readSync(fd, Buffer.alloc(1), 0, 1, 0))).toBe('EBADF'));
      withFd(p('f'), O_RDONLY, (fd) => expect(errnoOf(() => fs.writeSync(fd, 'y'))).toBe('EBADF'));
      fs.mkdirSync(p('d'));
      withFd(p('d'), O_RDONLY, (fd) => expect(errnoOf(() => fs.readSync(fd, Buffer.alloc(1), 0, 1, 0))).toBe('EISDIR'));
    });
  });

  describe('sparse files, SEEK_DATA and SEEK_HOLE', () => {
    it('a file with one data page far from the start reports exactly that page as data', () => {
      const { SEEK_DATA, SEEK_HOLE } = ctx.sys.constants;
      const oneMiB = 1 << 20;
      withFd(p('sparse'), 'w+', (fd) => {
        pwriteAll(fd, oneMiB, Buffer.alloc(PAGE, 7));
        fs.ftruncateSync(fd, 64 * oneMiB);
        const st = fs.fstatSync(fd);
        expect(st.size).toBe(64 * oneMiB);
        expect(st.blocks * 512).toBeLessThan(st.size / 8);
        expect(ctx.sys.lseek(fd, 0, SEEK_DATA)).toBe(oneMiB);
        expect(ctx.sys.lseek(fd, 0, SEEK_HOLE)).toBe(0);
        expect(ctx.sys.lseek(fd, oneMiB, SEEK_HOLE)).toBe(oneMiB + PAGE);
        expect(ctx.sys.lseek(fd, oneMiB + 100, SEEK_DATA)).toBe(oneMiB + 100);
        expect(errnoOf(() => ctx.sys.lseek(fd, oneMiB + PAGE, SEEK_DATA))).toBe('ENXIO');
        expect(errnoOf(() => ctx.sys.lseek(fd, 64 * oneMiB, SEEK_HOLE))).toBe('ENXIO');
        expect(errnoOf(() => ctx.sys.lseek(fd, 64 * oneMiB + 1, SEEK_DATA))).toBe('ENXIO');
        expect(preadExact(fd, oneMiB - 10, 20).equals(Buffer.concat([Buffer.alloc(10), Buffer.alloc(10, 7)]))).toBe(true);
      });
    });

    it('a fully written file has no hole before EOF', () => {
      const { SEEK_DATA, SEEK_HOLE } = ctx.sys.constants;
      withFd(p('dense'), 'w+', (fd) => {
        pwriteAll(fd, 0, patternBytes(3 * PAGE + 5, 3));
        expect(ctx.sys.lseek(fd, 0, SEEK_DATA)).toBe(0);
        expect(ctx.sys.lseek(fd, 0, SEEK_HOLE)).toBe(3 * PAGE + 5);
      });
    });
  });

  describe('fsync', () => {
    it('fsync and fdatasync succeed on files and directories and keep the data', () => {
      fs.mkdirSync(p('d'));
      withFd(p('d', 'f'), 'w+', (fd) => {
        pwriteAll(fd, 0, Buffer.from('durable'));
        fs.fsyncSync(fd);
        fs.fdatasyncSync(fd);
      });
      withFd(p('d'), O_RDONLY | O_DIRECTORY, (fd) => fs.fsyncSync(fd));
      expect(fs.readFileSync(p('d', 'f'), 'utf8')).toBe('durable');
    });
  });

  describe('fallocate', () => {
    it('mode 0 extends the size with zeros and allocates blocks', () => {
      withFd(p('f'), 'w+', (fd) => {
        pwriteAll(fd, 0, Buffer.from('abc'));
        ctx.sys.fallocate(fd, 0, 0, 256 * 1024);
        const st = fs.fstatSync(fd);
        expect(st.size).toBe(256 * 1024);
        expect(st.blocks * 512).toBeGreaterThanOrEqual(256 * 1024);
        const data = preadExact(fd, 0, 256 * 1024);
        expect(data.subarray(0, 3).toString()).toBe('abc');
        expect(data.subarray(3).every((b) => b === 0)).toBe(true);
      });
    });

    it('KEEP_SIZE allocates past EOF without changing the size', () => {
      const { FALLOC_FL_KEEP_SIZE } = ctx.sys.constants;
      withFd(p('f'), 'w+', (fd) => {
        pwriteAll(fd, 0, Buffer.from('abc'));
        const blocksBefore = fs.fstatSync(fd).blocks;
        ctx.sys.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20);
        const st = fs.fstatSync(fd);
        expect(st.size).toBe(3);
        expect(st.blocks).toBeGreaterThan(blocksBefore);
        expect(preadExact(fd, 0, 100).toString()).toBe('abc');
      });
    });

    it('PUNCH_HOLE|KEEP_SIZE zeroes the range, keeps the size and makes a hole; PUNCH_HOLE alone is refused', () => {
      const { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, SEEK_HOLE, SEEK_DATA } = ctx.sys.constants;
      const data = patternBytes(16 * PAGE, 4);
      withFd(p('f'), 'w+', (fd) => {
        pwriteAll(fd, 0, data);
        ctx.sys.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * PAGE, 4 * PAGE);
        // An unaligned punch zeroes the partial pages it covers without freeing them.
        ctx.sys.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10 * PAGE + 100, 200);
        const expected = Buffer.from(data);
        expected.fill(0, 4 * PAGE, 8 * PAGE);
        expected.fill(0, 10 * PAGE + 100, 10 * PAGE + 300);
        expect(fs.fstatSync(fd).size).toBe(16 * PAGE);
        expect(preadExact(fd, 0, 16 * PAGE).equals(expected)).toBe(true);
        expect(ctx.sys.lseek(fd, 0, SEEK_HOLE)).toBe(4 * PAGE);
        expect(ctx.sys.lseek(fd, 4 * PAGE, SEEK_DATA)).toBe(8 * PAGE);
        expect(errnoOf(() => ctx.sys.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PAGE))).toBe('ENOTSUP');
      });
    });

    it('fallocate on a read-only descriptor fails with EBADF and bad ranges with EINVAL', () => {
      fs.writeFileSync(p('f'), 'x');
      withFd(p('f'), 'r', (fd) => expect(errnoOf(() => ctx.sys.fallocate(fd, 0, 0, PAGE))).toBe('EBADF'));
      withFd(p('f'), 'r+', (fd) => {
        expect(errnoOf(() => ctx.sys.fallocate(fd, 0, 0, 0))).toBe('EINVAL');
        expect(errnoOf(() => ctx.sys.fallocate(fd, 0, -1, PAGE))).toBe('EINVAL');
      });
    });
  });

  describe('copy_file_range', () => {
    it('copies a range between files at explicit offsets', () => {
      const source = patternBytes(300_000, 5);
      fs.writeFileSync(p('src'), source);
      fs.writeFileSync(p('dst'), Buffer.from('0123456789'));
      withFd(p('src'), 'r', (fdIn) =>
        withFd(p('dst'), 'r+', (fdOut) => {
          let copied = 0;
          while (copied < 200_000) {
            const n = ctx.sys.copyFileRange(fdIn, 10 + copied, fdOut, 5 + copied, 200_000 - copied);
            expect(n).toBeGreaterThan(0);
            copied += n;
          }
          expect(ctx.sys.copyFileRange(fdIn, source.length, fdOut, 0, 100)).toBe(0);
        }),
      );
      const dst = fs.readFileSync(p('dst'));
      expect(dst.length).toBe(200_005);
      expect(dst.subarray(0, 5).toString()).toBe('01234');
      expect(dst.subarray(5).equals(source.subarray(10, 200_010))).toBe(true);
    });

    it('null offsets use and advance the descriptors’ positions', () => {
      const { SEEK_CUR } = ctx.sys.constants;
      fs.writeFileSync(p('src'), 'abcdefghij');
      withFd(p('src'), 'r', (fdIn) =>
        withFd(p('dst'), 'w+', (fdOut) => {
          ctx.sys.lseek(fdIn, 2, ctx.sys.constants.SEEK_SET);
          expect(ctx.sys.copyFileRange(fdIn, null, fdOut, null, 4)).toBe(4);
          expect(ctx.sys.lseek(fdIn, 0, SEEK_CUR)).toBe(6);
          expect(ctx.sys.lseek(fdOut, 0, SEEK_CUR)).toBe(4);
        }),
      );
      expect(fs.readFileSync(p('dst'), 'utf8')).toBe('cdef');
    });

    it('overlapping ranges in one file and a read-only destination are refused', () => {
      fs.writeFileSync(p('f'), patternBytes(10_000, 6));
      withFd(p('f'), 'r+', (fd) => expect(errnoOf(() => ctx.sys.copyFileRange(fd, 0, fd, 100, 1000))).toBe('EINVAL'));
      withFd(p('f'), 'r', (fdIn) =>
        withFd(p('f'), 'r', (fdOut) => expect(errnoOf(() => ctx.sys.copyFileRange(fdIn, 0, fdOut, 0, 10))).toBe('EBADF')),
      );
    });
  });

  describe('unlinked but open files', () => {
    it('stay readable and writable after unlink, with nlink 0, and vanish on close', () => {
      const fd = fs.openSync(p('f'), 'w+');
      try {
        pwriteAll(fd, 0, Buffer.from('before unlink'));
        fs.unlinkSync(p('f'));
        expect(fs.existsSync(p('f'))).toBe(false);
        expect(fs.readdirSync(ctx.dir())).toEqual([]);
        expect(fs.fstatSync(fd).nlink).toBe(0);
        pwriteAll(fd, 13, Buffer.from(', after'));
        expect(preadExact(fd, 0, 100).toString()).toBe('before unlink, after');
        fs.ftruncateSync(fd, 6);
        expect(fs.fstatSync(fd).size).toBe(6);
        fs.fchmodSync(fd, 0o600);
        expect(fs.fstatSync(fd).mode & 0o777).toBe(0o600);
        // A new file under the old name is a different file.
        fs.writeFileSync(p('f'), 'new one');
        expect(preadExact(fd, 0, 100).toString()).toBe('before');
        expect(fs.readFileSync(p('f'), 'utf8')).toBe('new one');
      } finally {
        fs.closeSync(fd);
      }
      expect(fs.readFileSync(p('f'), 'utf8')).toBe('new one');
    });

    it('a file replaced by rename stays readable through an fd opened before', () => {
      fs.writeFileSync(p('old'), 'old content');
      fs.writeFileSync(p('new'), 'new content');
      withFd(p('old'), 'r', (fd) => {
        fs.renameSync(p('new'), p('old'));
        expect(fs.fstatSync(fd).nlink).toBe(0);
        expect(preadExact(fd, 0, 100).toString()).toBe('old content');
      });
      expect(fs.readFileSync(p('old'), 'utf8')).toBe('new content');
    });

    it('O_TMPFILE makes an unnamed file that linkat can name, or is refused cleanly', () => {
      let fd: number;
      try {
        fd = ctx.sys.openTmpfile(ctx.dir(), 0o600);
      } catch (error) {
        expect(['ENOTSUP', 'EISDIR', 'EINVAL']).toContain((error as NodeJS.ErrnoException).code);
        expect(fs.readdirSync(ctx.dir())).toEqual([]);
        return;
      }
      try {
        expect(fs.readdirSync(ctx.dir())).toEqual([]);
        pwriteAll(fd, 0, Buffer.from('anonymous'));
        expect(fs.fstatSync(fd).nlink).toBe(0);
        ctx.sys.linkFd(fd, ctx.p('named'));
        expect(fs.fstatSync(fd).nlink).toBe(1);
      } finally {
        fs.closeSync(fd);
      }
      expect(fs.readFileSync(ctx.p('named'), 'utf8')).toBe('anonymous');
    });
  });

  describe('mmap', () => {
    it('stores through a shared mapping are seen by read(2), and write(2) by a mapping', () => {
      const size = 5 * PAGE;
      fs.writeFileSync(p('f'), patternBytes(size, 7));
      const patch = patternBytes(PAGE + 300, 8);
      withFd(p('f'), 'r+', (fd) => {
        const echoed = ctx.sys.mmapWriteRead(fd, PAGE - 150, patch);
        expect(echoed.equals(patch)).toBe(true);
        withFd(p('f'), 'r', (reader) => expect(preadExact(reader, PAGE - 150, patch.length).equals(patch)).toBe(true));
        const fresh = patternBytes(1000, 9);
        pwriteAll(fd, 3 * PAGE + 17, fresh);
        expect(ctx.sys.mmapRead(fd, 3 * PAGE + 17, fresh.length).equals(fresh)).toBe(true);
      });
      const expected = patternBytes(size, 7);
      patch.copy(expected, PAGE - 150);
      patternBytes(1000, 9).copy(expected, 3 * PAGE + 17);
      expect(fs.readFileSync(p('f')).equals(expected)).toBe(true);
    });

    it('a mapping sees truncation and extension made through the file', () => {
      fs.writeFileSync(p('f'), Buffer.alloc(2 * PAGE, 0x55));
      withFd(p('f'), 'r+', (fd) => {
        fs.ftruncateSync(fd, PAGE);
        fs.ftruncateSync(fd, 2 * PAGE);
        const second = ctx.sys.mmapRead(fd, PAGE, PAGE);
        expect(second.every((b) => b === 0)).toBe(true);
        expect(errnoOf(() => ctx.sys.mmapRead(fd, PAGE, 2 * PAGE))).toBe('E_MMAP_PAST_EOF');
      });
    });
  });
}
