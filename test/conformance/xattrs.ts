// Extended attributes: either they work like tmpfs's user.* namespace, or every call answers
// ENOTSUP (a FUSE daemon that returns ENOSYS is turned into ENOTSUP by the kernel). Half-working
// is the failure this catches.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errnoOf, type SuiteContext } from './common';

export function defineXattrTests(ctx: SuiteContext): void {
  const { p } = ctx;

  describe('xattrs', () => {
    it('set/get/list/remove with CREATE and REPLACE semantics, or ENOTSUP from every call', () => {
      const { XATTR_CREATE, XATTR_REPLACE } = ctx.sys.constants;
      const sys = ctx.sys;
      fs.writeFileSync(p('f'), 'x');
      const first = errnoOf(() => sys.setxattr(p('f'), 'user.colour', 'blue'));
      if (first === 'ENOTSUP') {
        expect(errnoOf(() => sys.getxattr(p('f'), 'user.colour'))).toMatch(/^(ENOTSUP|ENODATA)$/);
        const list = errnoOf(() => expect(sys.listxattr(p('f')).filter((n) => n.startsWith('user.'))).toEqual([]));
        expect(list).toMatch(/^(OK|ENOTSUP)$/);
        expect(errnoOf(() => sys.removexattr(p('f'), 'user.colour'))).toMatch(/^(ENOTSUP|ENODATA)$/);
        console.warn(`[conformance ${ctx.label}] xattrs not supported (ENOTSUP everywhere): consistent`);
        return;
      }
      expect(first).toBe('OK');
      expect(sys.getxattr(p('f'), 'user.colour').toString()).toBe('blue');
      const binary = Buffer.from([0, 1, 2, 0, 255, 0]);
      sys.setxattr(p('f'), 'user.binary', binary);
      expect(sys.getxattr(p('f'), 'user.binary').equals(binary)).toBe(true);
      sys.setxattr(p('f'), 'user.empty', Buffer.alloc(0));
      expect(sys.getxattr(p('f'), 'user.empty').length).toBe(0);
      const big = Buffer.alloc(3000, 0x61);
      sys.setxattr(p('f'), 'user.big', big);
      expect(sys.getxattr(p('f'), 'user.big').equals(big)).toBe(true);
      expect(sys.listxattr(p('f')).filter((n) => n.startsWith('user.')).sort()).toEqual([
        'user.big',
        'user.binary',
        'user.colour',
        'user.empty',
      ]);

      expect(errnoOf(() => sys.setxattr(p('f'), 'user.colour', 'red', XATTR_CREATE))).toBe('EEXIST');
      expect(errnoOf(() => sys.setxattr(p('f'), 'user.absent', 'x', XATTR_REPLACE))).toBe('ENODATA');
      sys.setxattr(p('f'), 'user.colour', 'green', XATTR_REPLACE);
      expect(sys.getxattr(p('f'), 'user.colour').toString()).toBe('green');
      expect(errnoOf(() => sys.getxattr(p('f'), 'user.absent'))).toBe('ENODATA');

      sys.removexattr(p('f'), 'user.colour');
      expect(errnoOf(() => sys.getxattr(p('f'), 'user.colour'))).toBe('ENODATA');
      expect(errnoOf(() => sys.removexattr(p('f'), 'user.colour'))).toBe('ENODATA');
      expect(sys.listxattr(p('f')).filter((n) => n.startsWith('user.')).sort()).toEqual(['user.big', 'user.binary', 'user.empty']);
      expect(errnoOf(() => sys.getxattr(p('missing'), 'user.x'))).toBe('ENOENT');
      expect(errnoOf(() => sys.setxattr(p('f'), 'nonamespace', 'x'))).toBe('ENOTSUP');

      // Attributes belong to the inode: a hard link sees them, a copy does not.
      fs.linkSync(p('f'), p('hard'));
      expect(sys.getxattr(p('hard'), 'user.binary').equals(binary)).toBe(true);
      fs.mkdirSync(p('d'));
      sys.setxattr(p('d'), 'user.on-dir', 'yes');
      expect(sys.getxattr(p('d'), 'user.on-dir').toString()).toBe('yes');
      fs.renameSync(p('d'), p('d2'));
      expect(sys.getxattr(p('d2'), 'user.on-dir').toString()).toBe('yes');
    });
  });
}
