// Permission checks as an unprivileged user: a child process running as uid/gid 1000 (libuv's
// setuid also drops supplementary groups) tries operations on files root prepared. On a FUSE
// mount this needs `allow_other` (else the kernel refuses every other user, which the positive
// cases catch) and `default_permissions` (else the kernel leaves the checks to the daemon).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { skipping, switchUserUnavailable } from '../support/capabilities';
import type { SuiteContext } from './common';

const USER = 1000;
const CHILD_TIMEOUT_MS = 20_000;

type ChildOp =
  | ['read', string]
  | ['write', string]
  | ['openWrite', string]
  | ['openTrunc', string]
  | ['create', string]
  | ['unlink', string]
  | ['rename', string, string]
  | ['mkdir', string]
  | ['chmod', string, number]
  | ['chown', string, number, number]
  | ['utimes', string, number, number]
  | ['truncate', string, number]
  | ['access', string, number]
  | ['readdir', string]
  | ['stat', string];

// Runs in the child: each op's result is 'OK' or the errno code.
const CHILD_SOURCE = `
const fs = require('node:fs');
const ops = JSON.parse(process.argv[1]);
const results = ops.map(([op, ...a]) => {
  try {
    switch (op) {
      case 'read': fs.readFileSync(a[0]); break;
      case 'write': { const fd = fs.openSync(a[0], 'r+'); fs.writeSync(fd, 'w'); fs.closeSync(fd); break; }
      case 'openWrite': fs.closeSync(fs.openSync(a[0], 'r+')); break;
      case 'openTrunc': fs.closeSync(fs.openSync(a[0], fs.constants.O_WRONLY | fs.constants.O_TRUNC)); break;
      case 'create': fs.writeFileSync(a[0], 'mine', { flag: 'wx', mode: 0o600 }); break;
      case 'unlink': fs.unlinkSync(a[0]); break;
      case 'rename': fs.renameSync(a[0], a[1]); break;
      case 'mkdir': fs.mkdirSync(a[0]); break;
      case 'chmod': fs.chmodSync(a[0], a[1]); break;
      case 'chown': fs.chownSync(a[0], a[1], a[2]); break;
      case 'utimes': fs.utimesSync(a[0], a[1], a[2]); break;
      case 'truncate': fs.truncateSync(a[0], a[1]); break;
      case 'access': fs.accessSync(a[0], a[1]); break;
      case 'readdir': fs.readdirSync(a[0]); break;
      case 'stat': fs.statSync(a[0]); break;
      default: return 'UNKNOWN_OP';
    }
    return 'OK';
  } catch (e) { return e.code || String(e); }
});
process.stdout.write(JSON.stringify(results));
`;

function runAsUser(ops: ChildOp[]): string[] {
  const child = spawnSync(process.execPath, ['-e', CHILD_SOURCE, JSON.stringify(ops)], {
    uid: USER,
    gid: USER,
    cwd: '/',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    timeout: CHILD_TIMEOUT_MS,
    encoding: 'utf8',
  });
  if (child.error) throw child.error;
  if (child.status !== 0) throw new Error(`uid ${USER} child exited ${child.status}: ${child.stderr}`);
  return JSON.parse(child.stdout) as string[];
}

export function definePermissionTests(ctx: SuiteContext): void {
  const { p } = ctx;
  const cannot = switchUserUnavailable();
  if (cannot) skipping(`[conformance ${ctx.label}] permission tests (a uid ${USER} child)`, cannot);

  describe.skipIf(cannot !== undefined)(`permissions as uid ${USER}`, () => {
    it('mode bits, ownership, the sticky bit and setattr rules hold for an unprivileged user', () => {
      const { R_OK, W_OK } = fs.constants;
      // The per-test dir must be reachable by the child.
      fs.chmodSync(ctx.dir(), 0o755);
      fs.writeFileSync(p('secret'), 'root only');
      fs.chmodSync(p('secret'), 0o600);
      fs.writeFileSync(p('public'), 'everyone reads');
      fs.chmodSync(p('public'), 0o644);
      fs.writeFileSync(p('shared'), 'everyone writes');
      fs.chmodSync(p('shared'), 0o666);
      fs.mkdirSync(p('rootdir'));
      fs.chmodSync(p('rootdir'), 0o755);
      fs.mkdirSync(p('private'));
      fs.chmodSync(p('private'), 0o700);
      fs.writeFileSync(p('private', 'inside'), '');
      fs.mkdirSync(p('open'));
      fs.chmodSync(p('open'), 0o777);
      fs.mkdirSync(p('sticky'));
      fs.chmodSync(p('sticky'), 0o1777);
      fs.writeFileSync(p('sticky', 'roots'), '');
      fs.chmodSync(p('sticky', 'roots'), 0o666);
      fs.writeFileSync(p('open', 'roots'), '');

      const cases: Array<[string, ChildOp, string]> = [
        ['read 0600 root file', ['read', p('secret')], 'EACCES'],
        ['access R_OK 0600 root file', ['access', p('secret'), R_OK], 'EACCES'],
        ['read 0644 root file', ['read', p('public')], 'OK'],
        ['write 0644 root file', ['write', p('public')], 'EACCES'],
        ['access W_OK 0644 root file', ['access', p('public'), W_OK], 'EACCES'],
        ['truncate 0644 root file', ['truncate', p('public'), 0], 'EACCES'],
        ['write 0666 root file', ['write', p('shared')], 'OK'],
        ['create in 0755 root dir', ['create', p('rootdir', 'mine')], 'EACCES'],
        ['mkdir in 0755 root dir', ['mkdir', p('rootdir', 'sub')], 'EACCES'],
        ['readdir 0700 root dir', ['readdir', p('private')], 'EACCES'],
        ['stat inside 0700 root dir', ['stat', p('private', 'inside')], 'EACCES'],
        ['create in 0777 dir', ['create', p('open', 'mine')], 'OK'],
        ['read own 0600 file', ['read', p('open', 'mine')], 'OK'],
        ['chmod own file', ['chmod', p('open', 'mine'), 0o640], 'OK'],
        ['chown own file to root', ['chown', p('open', 'mine'), 0, 0], 'EPERM'],
        ['chmod root file', ['chmod', p('public'), 0o777], 'EPERM'],
        ['chown root file to self', ['chown', p('public'), USER, USER], 'EPERM'],
        ['explicit utimes on root file', ['utimes', p('shared'), 1, 1], 'EPERM'],
        // Node's utimes always passes explicit times (never UTIME_NOW), which only the owner may set.
        ['explicit utimes on own file', ['utimes', p('open', 'mine'), 1, 1], 'OK'],
        ['unlink root file in 0777 dir', ['unlink', p('open', 'roots')], 'OK'],
        ['unlink root file in sticky dir', ['unlink', p('sticky', 'roots')], 'EPERM'],
        ['rename root file in sticky dir', ['rename', p('sticky', 'roots'), p('sticky', 'moved')], 'EPERM'],
      ];
      const results = runAsUser(cases.map(([, op]) => op));
      const got = Object.fromEntries(cases.map(([name], i) => [name, results[i]]));
      const want = Object.fromEntries(cases.map(([name, , expected]) => [name, expected]));
      expect(got).toEqual(want);

      const mine = fs.statSync(p('open', 'mine'));
      expect([mine.uid, mine.gid, mine.mode & 0o777]).toEqual([USER, USER, 0o640]);
      expect(fs.readFileSync(p('shared'), 'utf8')).toBe('wveryone writes');
      expect(fs.existsSync(p('sticky', 'roots'))).toBe(true);
      expect(fs.existsSync(p('open', 'roots'))).toBe(false);
    });

    // The VFS's rule (setattr_should_drop_suidgid, fs/attr.c), which tmpfs follows: a write,
    // truncate or chown clears S_ISUID; S_ISGID goes too when group-execute is set, or when the
    // caller is neither in the file's group nor privileged. Writers with CAP_FSETID keep both, and
    // an open for writing alone changes nothing. Ephemera (FUSE_HANDLE_KILLPRIV_V2, passthrough
    // writes) clears them in the daemon; where it cannot match tmpfs it says so below.
    it('setuid/setgid bits are cleared on write, truncate and chown as tmpfs clears them', () => {
      fs.chmodSync(ctx.dir(), 0o755);
      const file = (name: string, mode: number, gid = 0) => {
        fs.writeFileSync(p(name), 'payload');
        fs.chownSync(p(name), 0, gid);
        fs.chmodSync(p(name), mode);
      };
      const modeOf = (name: string) => fs.statSync(p(name)).mode & 0o7777;
      file('w-suid-sgid-gx', 0o6777);
      file('w-suid-sgid', 0o6767);
      file('w-sgid-ingroup', 0o2766, USER); // the writer is in the file's group: S_ISGID stays
      file('w-twice', 0o6777);
      file('t-suid-sgid-gx', 0o6777);
      file('t-sgid-ingroup', 0o2766, USER);
      file('otrunc-suid', 0o4766);
      file('open-only', 0o6777);
      file('root-writes', 0o6777);
      file('chown-gx', 0o6777);
      file('chown-nogx', 0o6767);
      file('rootnocap-othergroup', 0o6767, USER); // root without CAP_FSETID, not in the file's group
      file('rootnocap-owngroup', 0o6767);

      const cases: Array<[string, ChildOp]> = [
        ['write', ['write', p('w-suid-sgid-gx')]],
        ['write', ['write', p('w-suid-sgid')]],
        ['write', ['write', p('w-sgid-ingroup')]],
        ['write', ['write', p('w-twice')]],
        ['write', ['write', p('w-twice')]],
        ['truncate', ['truncate', p('t-suid-sgid-gx'), 1]],
        ['truncate', ['truncate', p('t-sgid-ingroup'), 1]],
        ['open O_TRUNC', ['openTrunc', p('otrunc-suid')]],
        ['open for writing', ['openWrite', p('open-only')]],
      ];
      expect(runAsUser(cases.map(([, op]) => op))).toEqual(cases.map(() => 'OK'));
      const fd = fs.openSync(p('root-writes'), 'r+');
      fs.writeSync(fd, 'root');
      fs.closeSync(fd);
      fs.chownSync(p('chown-gx'), USER, USER); // root: S_ISUID always goes, S_ISGID with g+x only
      fs.chownSync(p('chown-nogx'), USER, USER);
      // uid 0 without CAP_FSETID (dropped from the bounding set, so exec leaves it out): the kernel,
      // not the uid, decides, so it loses the bits as an unprivileged writer does.
      const noCap = spawnSync('setpriv', ['--bounding-set=-fsetid', process.execPath, '-e', CHILD_SOURCE, JSON.stringify([['write', p('rootnocap-othergroup')], ['write', p('rootnocap-owngroup')]])], {
        cwd: '/',
        timeout: CHILD_TIMEOUT_MS,
        encoding: 'utf8',
      });
      expect([noCap.error, noCap.status, noCap.stdout]).toEqual([undefined, 0, JSON.stringify(['OK', 'OK'])]);

      const names = ['w-suid-sgid-gx', 'w-suid-sgid', 'w-sgid-ingroup', 'w-twice', 't-suid-sgid-gx', 't-sgid-ingroup', 'otrunc-suid', 'open-only', 'root-writes', 'chown-gx', 'chown-nogx', 'rootnocap-othergroup', 'rootnocap-owngroup'];
      // fs.statSync asks for every basic field. Ephemera differs from tmpfs for a statx asking for
      // the mode alone right after an O_TRUNC open: the kernel then refreshes size and times but
      // keeps its cached mode (fs/fuse/file.c, FUSE_STATX_MODSIZE) until the next write or refresh.
      expect(Object.fromEntries(names.map((n) => [n, modeOf(n).toString(8)]))).toEqual({
        'w-suid-sgid-gx': '777',
        'w-suid-sgid': '767',
        'w-sgid-ingroup': '2766',
        'w-twice': '777',
        't-suid-sgid-gx': '777',
        't-sgid-ingroup': '2766',
        'otrunc-suid': '766',
        'open-only': '6777',
        'root-writes': '6777',
        'chown-gx': '777',
        'chown-nogx': '2767',
        'rootnocap-othergroup': '767',
        'rootnocap-owngroup': '2767',
      });
      expect(fs.readFileSync(p('w-twice'), 'utf8')).toBe('wayload'); // both writes landed at offset 0
      expect(fs.readFileSync(p('otrunc-suid'), 'utf8')).toBe('');
      expect(fs.readFileSync(p('root-writes'), 'utf8')).toBe('rootoad');
    });
  });
}
