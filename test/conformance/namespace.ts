// Name-space operations: mkdir/rmdir, unlink, rename (plain, NOREPLACE, EXCHANGE, across
// directories), link, symlink/readlink and readdir (large, changing, odd names).
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errnoOf, names, type SuiteContext } from './common';

export function defineNamespaceTests(ctx: SuiteContext): void {
  const { p } = ctx;

  describe('mkdir and rmdir', () => {
    it('mkdir, EEXIST, nested ENOENT, rmdir, ENOTEMPTY, ENOTDIR, EINVAL on "."', () => {
      fs.mkdirSync(p('d'), 0o750);
      expect(fs.statSync(p('d')).isDirectory()).toBe(true);
      expect(fs.statSync(p('d')).mode & 0o777).toBe(0o750 & ~process.umask());
      expect(errnoOf(() => fs.mkdirSync(p('d')))).toBe('EEXIST');
      fs.writeFileSync(p('f'), '');
      expect(errnoOf(() => fs.mkdirSync(p('f')))).toBe('EEXIST');
      expect(errnoOf(() => fs.mkdirSync(p('missing', 'd')))).toBe('ENOENT');
      fs.writeFileSync(p('d', 'inside'), '');
      expect(errnoOf(() => fs.rmdirSync(p('d')))).toBe('ENOTEMPTY');
      expect(errnoOf(() => fs.rmdirSync(p('f')))).toBe('ENOTDIR');
      // path.join would normalise the '.' away.
      expect(errnoOf(() => fs.rmdirSync(`${p('d')}/.`))).toBe('EINVAL');
      expect(errnoOf(() => fs.rmdirSync(p('missing')))).toBe('ENOENT');
      fs.unlinkSync(p('d', 'inside'));
      fs.rmdirSync(p('d'));
      expect(fs.existsSync(p('d'))).toBe(false);
    });

    it('a deep tree can be built and removed bottom-up', () => {
      let current = ctx.dir();
      const chain: string[] = [];
      for (let i = 0; i < 40; i++) {
        current = `${current}/level${i}`;
        fs.mkdirSync(current);
        chain.push(current);
      }
      fs.writeFileSync(`${current}/leaf`, 'deep');
      expect(fs.readFileSync(`${current}/leaf`, 'utf8')).toBe('deep');
      fs.unlinkSync(`${current}/leaf`);
      for (const dir of chain.reverse()) fs.rmdirSync(dir);
      expect(fs.readdirSync(ctx.dir())).toEqual([]);
    });
  });

  describe('unlink', () => {
    it('removes a name; ENOENT after; EISDIR for a directory', () => {
      fs.writeFileSync(p('f'), 'x');
      fs.unlinkSync(p('f'));
      expect(errnoOf(() => fs.statSync(p('f')))).toBe('ENOENT');
      expect(errnoOf(() => fs.unlinkSync(p('f')))).toBe('ENOENT');
      fs.mkdirSync(p('d'));
      expect(errnoOf(() => fs.unlinkSync(p('d')))).toBe('EISDIR');
      fs.symlinkSync('d', p('l'));
      fs.unlinkSync(p('l'));
      expect(fs.statSync(p('d')).isDirectory()).toBe(true);
    });
  });

  describe('rename', () => {
    it('moves a name within a directory and keeps the inode', () => {
      fs.writeFileSync(p('a'), 'content');
      const ino = fs.statSync(p('a')).ino;
      fs.renameSync(p('a'), p('b'));
      expect(fs.existsSync(p('a'))).toBe(false);
      expect(fs.readFileSync(p('b'), 'utf8')).toBe('content');
      expect(fs.statSync(p('b')).ino).toBe(ino);
      fs.renameSync(p('b'), p('b'));
      expect(fs.readFileSync(p('b'), 'utf8')).toBe('content');
    });

    it('replaces an existing file atomically', () => {
      fs.writeFileSync(p('a'), 'A');
      fs.writeFileSync(p('b'), 'B');
      const inoA = fs.statSync(p('a')).ino;
      fs.renameSync(p('a'), p('b'));
      expect(names(ctx.dir())).toEqual(['b']);
      expect(fs.readFileSync(p('b'), 'utf8')).toBe('A');
      expect(fs.statSync(p('b')).ino).toBe(inoA);
    });

    it('directories: over an empty dir works, over a non-empty one fails, kinds must match', () => {
      fs.mkdirSync(p('d1'));
      fs.writeFileSync(p('d1', 'x'), 'x');
      fs.mkdirSync(p('empty'));
      fs.mkdirSync(p('full'));
      fs.writeFileSync(p('full', 'y'), 'y');
      fs.writeFileSync(p('file'), 'f');
      expect(errnoOf(() => fs.renameSync(p('d1'), p('full')))).toBe('ENOTEMPTY');
      expect(errnoOf(() => fs.renameSync(p('d1'), p('file')))).toBe('ENOTDIR');
      expect(errnoOf(() => fs.renameSync(p('file'), p('empty')))).toBe('EISDIR');
      expect(errnoOf(() => fs.renameSync(p('d1'), p('d1', 'sub')))).toBe('EINVAL');
      expect(errnoOf(() => fs.renameSync(p('missing'), p('other')))).toBe('ENOENT');
      fs.renameSync(p('d1'), p('empty'));
      expect(names(p('empty'))).toEqual(['x']);
      expect(names(ctx.dir())).toEqual(['empty', 'file', 'full']);
    });

    it('into another directory, updating both parents’ link counts for a directory', () => {
      fs.mkdirSync(p('src'));
      fs.mkdirSync(p('dst'));
      fs.mkdirSync(p('src', 'moving'));
      fs.writeFileSync(p('src', 'moving', 'payload'), 'payload');
      fs.writeFileSync(p('src', 'file'), 'file');
      expect(fs.statSync(p('src')).nlink).toBe(3);
      fs.renameSync(p('src', 'moving'), p('dst', 'moved'));
      fs.renameSync(p('src', 'file'), p('dst', 'file'));
      expect(fs.statSync(p('src')).nlink).toBe(2);
      expect(fs.statSync(p('dst')).nlink).toBe(3);
      expect(names(p('src'))).toEqual([]);
      expect(names(p('dst'))).toEqual(['file', 'moved']);
      expect(fs.readFileSync(p('dst', 'moved', 'payload'), 'utf8')).toBe('payload');
      // '..' of the moved directory follows it.
      expect(fs.statSync(p('dst', 'moved', '..')).ino).toBe(fs.statSync(p('dst')).ino);
    });

    it('renaming one hard link onto another of the same inode is a no-op', () => {
      fs.writeFileSync(p('a'), 'same');
      fs.linkSync(p('a'), p('b'));
      fs.renameSync(p('a'), p('b'));
      expect(names(ctx.dir())).toEqual(['a', 'b']);
      expect(fs.statSync(p('a')).nlink).toBe(2);
    });

    it('RENAME_NOREPLACE fails with EEXIST on an existing target and moves otherwise', () => {
      const { RENAME_NOREPLACE } = ctx.sys.constants;
      fs.writeFileSync(p('a'), 'A');
      fs.writeFileSync(p('b'), 'B');
      expect(errnoOf(() => ctx.sys.renameat2(p('a'), p('b'), RENAME_NOREPLACE))).toBe('EEXIST');
      expect(fs.readFileSync(p('a'), 'utf8')).toBe('A');
      expect(fs.readFileSync(p('b'), 'utf8')).toBe('B');
      ctx.sys.renameat2(p('a'), p('c'), RENAME_NOREPLACE);
      expect(names(ctx.dir())).toEqual(['b', 'c']);
      fs.mkdirSync(p('d'));
      expect(errnoOf(() => ctx.sys.renameat2(p('c'), p('d'), RENAME_NOREPLACE))).toBe('EEXIST');
    });

    it('RENAME_EXCHANGE swaps two names atomically, also a file with a directory across parents', () => {
      const { RENAME_EXCHANGE, RENAME_NOREPLACE } = ctx.sys.constants;
      fs.writeFileSync(p('a'), 'A');
      fs.writeFileSync(p('b'), 'B');
      const [inoA, inoB] = [fs.statSync(p('a')).ino, fs.statSync(p('b')).ino];
      ctx.sys.renameat2(p('a'), p('b'), RENAME_EXCHANGE);
      expect(fs.readFileSync(p('a'), 'utf8')).toBe('B');
      expect(fs.readFileSync(p('b'), 'utf8')).toBe('A');
      expect([fs.statSync(p('a')).ino, fs.statSync(p('b')).ino]).toEqual([inoB, inoA]);

      fs.mkdirSync(p('p1'));
      fs.mkdirSync(p('p2'));
      fs.mkdirSync(p('p1', 'dir'));
      fs.writeFileSync(p('p1', 'dir', 'inside'), 'i');
      fs.writeFileSync(p('p2', 'file'), 'F');
      ctx.sys.renameat2(p('p1', 'dir'), p('p2', 'file'), RENAME_EXCHANGE);
      expect(fs.statSync(p('p1', 'dir')).isFile()).toBe(true);
      expect(fs.readFileSync(p('p1', 'dir'), 'utf8')).toBe('F');
      expect(fs.readFileSync(p('p2', 'file', 'inside'), 'utf8')).toBe('i');
      expect(fs.statSync(p('p1')).nlink).toBe(2);
      expect(fs.statSync(p('p2')).nlink).toBe(3);

      expect(errnoOf(() => ctx.sys.renameat2(p('a'), p('missing'), RENAME_EXCHANGE))).toBe('ENOENT');
      expect(errnoOf(() => ctx.sys.renameat2(p('a'), p('b'), RENAME_EXCHANGE | RENAME_NOREPLACE))).toBe('EINVAL');
    });
  });

  describe('link', () => {
    it('hard links share the inode and count links; content outlives one name', () => {
      fs.writeFileSync(p('a'), 'shared');
      fs.mkdirSync(p('d'));
      fs.linkSync(p('a'), p('b'));
      fs.linkSync(p('a'), p('d', 'c'));
      const st = fs.statSync(p('a'));
      expect(st.nlink).toBe(3);
      expect(fs.statSync(p('b')).ino).toBe(st.ino);
      expect(fs.statSync(p('d', 'c')).ino).toBe(st.ino);
      fs.appendFileSync(p('b'), '!');
      expect(fs.readFileSync(p('d', 'c'), 'utf8')).toBe('shared!');
      fs.unlinkSync(p('a'));
      expect(fs.statSync(p('b')).nlink).toBe(2);
      fs.unlinkSync(p('b'));
      expect(fs.statSync(p('d', 'c')).nlink).toBe(1);
      expect(fs.readFileSync(p('d', 'c'), 'utf8')).toBe('shared!');
    });

    it('link refuses an existing name, a directory and a missing source', () => {
      fs.writeFileSync(p('a'), '');
      fs.writeFileSync(p('b'), '');
      fs.mkdirSync(p('d'));
      expect(errnoOf(() => fs.linkSync(p('a'), p('b')))).toBe('EEXIST');
      expect(errnoOf(() => fs.linkSync(p('d'), p('d2')))).toBe('EPERM');
      expect(errnoOf(() => fs.linkSync(p('missing'), p('c')))).toBe('ENOENT');
    });
  });

  describe('symlink and readlink', () => {
    it('readlink returns the target byte for byte: relative, absolute, dangling, long', () => {
      const targets = ['file', '../elsewhere/x', '/absolute/path', 'dangling-nowhere', 'x'.repeat(1000), 'spaces and ünïcödé'];
      targets.forEach((target, i) => {
        fs.symlinkSync(target, p(`l${i}`));
        expect(fs.readlinkSync(p(`l${i}`))).toBe(target);
        expect(fs.lstatSync(p(`l${i}`)).size).toBe(Buffer.byteLength(target));
      });
      expect(errnoOf(() => fs.statSync(p('l3')))).toBe('ENOENT');
    });

    it('opening a symlink follows it; readlink of a non-link is EINVAL; EEXIST on an existing name', () => {
      fs.writeFileSync(p('f'), 'through the link');
      fs.symlinkSync('f', p('l'));
      expect(fs.readFileSync(p('l'), 'utf8')).toBe('through the link');
      fs.mkdirSync(p('d'));
      fs.writeFileSync(p('d', 'inner'), 'inner');
      fs.symlinkSync('d', p('ld'));
      expect(fs.readFileSync(p('ld', 'inner'), 'utf8')).toBe('inner');
      expect(errnoOf(() => fs.readlinkSync(p('f')))).toBe('EINVAL');
      expect(errnoOf(() => fs.symlinkSync('x', p('f')))).toBe('EEXIST');
      fs.symlinkSync('loop2', p('loop1'));
      fs.symlinkSync('loop1', p('loop2'));
      expect(errnoOf(() => fs.statSync(p('loop1')))).toBe('ELOOP');
    });
  });

  describe('readdir', () => {
    it('an empty directory lists nothing; types are reported per entry', () => {
      fs.mkdirSync(p('d'));
      expect(fs.readdirSync(p('d'))).toEqual([]);
      fs.writeFileSync(p('d', 'file'), '');
      fs.mkdirSync(p('d', 'sub'));
      fs.symlinkSync('file', p('d', 'link'));
      const kinds = Object.fromEntries(
        fs.readdirSync(p('d'), { withFileTypes: true }).map((e) => [
          e.name,
          e.isFile() ? 'file' : e.isDirectory() ? 'dir' : e.isSymbolicLink() ? 'symlink' : 'other',
        ]),
      );
      expect(kinds).toEqual({ file: 'file', sub: 'dir', link: 'symlink' });
    });

    it('lists 1,000 entries exactly once each, through a small buffer', async () => {
      const expected: string[] = [];
      for (let i = 0; i < 1000; i++) {
        const name = `entry-${i.toString().padStart(4, '0')}-${'x'.repeat(i % 50)}`;
        expected.push(name);
        fs.writeFileSync(p(name), '');
      }
      expect(names(ctx.dir())).toEqual(expected.sort());
      const dir = await fs.promises.opendir(ctx.dir(), { bufferSize: 7 });
      const seen: string[] = [];
      for await (const entry of dir) seen.push(entry.name);
      expect(seen.sort()).toEqual(expected);
    });

    it('entries present throughout a listing appear exactly once while others are added and removed', () => {
      const stable = new Set<string>();
      const doomed: string[] = [];
      for (let i = 0; i < 600; i++) {
        const name = `n${i}`;
        fs.writeFileSync(p(name), '');
        if (i % 3 === 0) doomed.push(name);
        else stable.add(name);
      }
      const dir = fs.opendirSync(ctx.dir(), { bufferSize: 16 });
      const seen: string[] = [];
      const added: string[] = [];
      try {
        let entry = dir.readSync();
        let step = 0;
        while (entry !== null) {
          seen.push(entry.name);
          if (step < doomed.length && step % 2 === 0) {
            const victim = doomed[step];
            if (victim !== undefined) fs.unlinkSync(p(victim));
            const newcomer = `added${step}`;
            fs.writeFileSync(p(newcomer), '');
            added.push(newcomer);
          }
          step++;
          entry = dir.readSync();
        }
      } finally {
        dir.closeSync();
      }
      const counts = new Map<string, number>();
      for (const name of seen) counts.set(name, (counts.get(name) ?? 0) + 1);
      for (const name of stable) expect(counts.get(name), name).toBe(1);
      for (const [name, count] of counts) {
        expect(count, `${name} listed more than once`).toBe(1);
        expect(stable.has(name) || doomed.includes(name) || added.includes(name), `unknown ${name}`).toBe(true);
      }
      // After the listing, the directory holds exactly the survivors and the newcomers.
      const survivors = [...stable, ...doomed.filter((n) => fs.existsSync(p(n))), ...added];
      expect(names(ctx.dir())).toEqual(survivors.sort());
    });

    it('odd but legal names round-trip: spaces, unicode, 255 bytes, leading dots and dashes', () => {
      const odd = ['with space', 'ünïcödé-名前', 'ĳ'.repeat(127), 'a'.repeat(255), '.hidden', '..twodots', '-dash', 'new\nline', 'tab\tname'];
      for (const name of odd) fs.writeFileSync(p(name), name);
      expect(names(ctx.dir())).toEqual([...odd].sort());
      for (const name of odd) expect(fs.readFileSync(p(name), 'utf8')).toBe(name);
    });
  });
}
