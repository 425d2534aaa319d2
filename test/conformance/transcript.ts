// "Comparing results": run one scripted sequence of operations in two directories and diff the
// normalised transcripts. A transcript line holds only what must match between file systems
// (return values, errno names, file type, permission bits, size of non-directories, link count,
// owner, bytes read, names listed), never inode numbers, devices, block counts or timestamps.
import fs from 'node:fs';
import path from 'node:path';
import { loadSyscalls } from '../../fusefs/syscalls';
import { sha256 } from './common';

export type Step =
  | { op: 'mkdir'; path: string; mode: number }
  | { op: 'rmdir'; path: string }
  | { op: 'open'; handle: string; path: string; flags: string; mode?: number }
  | { op: 'close'; handle: string }
  | { op: 'pwrite'; handle: string; offset: number; data: string }
  | { op: 'pread'; handle: string; offset: number; length: number }
  | { op: 'ftruncate'; handle: string; size: number }
  | { op: 'fstat'; handle: string }
  | { op: 'fsync'; handle: string }
  | { op: 'fallocate'; handle: string; mode: 'default' | 'keepSize' | 'punchHole' | 'punchHoleOnly'; offset: number; length: number }
  | { op: 'lseek'; handle: string; offset: number; whence: 'SEEK_SET' | 'SEEK_CUR' | 'SEEK_END' | 'SEEK_DATA' | 'SEEK_HOLE' }
  | { op: 'copyFileRange'; from: string; fromOffset: number; to: string; toOffset: number; length: number }
  | { op: 'mmapWriteRead'; handle: string; offset: number; data: string }
  | { op: 'stat' | 'lstat'; path: string }
  | { op: 'readFile'; path: string }
  | { op: 'writeFile'; path: string; data: string }
  | { op: 'truncate'; path: string; size: number }
  | { op: 'chmod'; path: string; mode: number }
  | { op: 'chown'; path: string; uid: number; gid: number }
  | { op: 'utimes'; path: string; atime: number; mtime: number }
  | { op: 'unlink'; path: string }
  | { op: 'rename'; from: string; to: string; flags?: 'NOREPLACE' | 'EXCHANGE' }
  | { op: 'link'; from: string; to: string }
  | { op: 'symlink'; target: string; path: string }
  | { op: 'readlink'; path: string }
  | { op: 'readdir'; path: string }
  | { op: 'access'; path: string; mode: 'F' | 'R' | 'W' | 'X' }
  | { op: 'mknod'; path: string; mode: number }
  | { op: 'setxattr'; path: string; name: string; value: string; flags?: 'CREATE' | 'REPLACE' }
  | { op: 'getxattr'; path: string; name: string }
  | { op: 'listxattr'; path: string }
  | { op: 'removexattr'; path: string; name: string };

function statShape(st: fs.Stats): string {
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : 'other';
  // Directory sizes are file-system specific (tmpfs counts entries, others report a block).
  const size = st.isDirectory() ? '' : ` size=${st.size}`;
  return `${type} mode=${(st.mode & 0o7777).toString(8)}${size} nlink=${st.nlink} uid=${st.uid} gid=${st.gid}`;
}

function bytesShape(data: Buffer): string {
  return data.length <= 32 ? `${data.length}:${JSON.stringify(data.toString('latin1'))}` : `${data.length}:sha256=${sha256(data).slice(0, 16)}`;
}

/**
 * Runs `script` inside `dir` (paths are relative to it) and returns one line per step. Handles
 * left open by the script are closed at the end; the caller owns `dir`'s contents.
 */
export function runTranscript(dir: string, script: readonly Step[]): string[] {
  const sys = loadSyscalls();
  const c = sys.constants;
  const handles = new Map<string, number>();
  const at = (relative: string) => path.join(dir, relative);
  const fd = (handle: string) => {
    const found = handles.get(handle);
    if (found === undefined) throw Object.assign(new Error(`no handle ${handle}`), { code: 'E_NO_HANDLE' });
    return found;
  };
  const lines: string[] = [];
  const umask = process.umask(0o022);
  try {
    script.forEach((step, index) => {
      let result: string;
      try {
        result = runStep(step);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (typeof code !== 'string') throw error;
        result = `ERR ${code}`;
      }
      const { op, ...args } = step;
      const shownArgs = JSON.stringify(args, (_key, value: unknown) =>
        typeof value === 'string' && value.length > 40 ? `${value.slice(0, 16)}…(${value.length})` : value,
      );
      lines.push(`${String(index).padStart(3, '0')} ${op} ${shownArgs} -> ${result}`);
    });
  } finally {
    process.umask(umask);
    for (const open of handles.values()) fs.closeSync(open);
  }
  return lines;

  function runStep(step: Step): string {
    switch (step.op) {
      case 'mkdir':
        fs.mkdirSync(at(step.path), step.mode);
        return 'ok';
      case 'rmdir':
        fs.rmdirSync(at(step.path));
        return 'ok';
      case 'open': {
        const opened = fs.openSync(at(step.path), step.flags, step.mode);
        handles.set(step.handle, opened);
        return 'ok';
      }
      case 'close':
        fs.closeSync(fd(step.handle));
        handles.delete(step.handle);
        return 'ok';
      case 'pwrite':
        return `wrote ${fs.writeSync(fd(step.handle), Buffer.from(step.data), 0, Buffer.byteLength(step.data), step.offset)}`;
      case 'pread': {
        const buffer = Buffer.alloc(step.length);
        const got = fs.readSync(fd(step.handle), buffer, 0, step.length, step.offset);
        return bytesShape(buffer.subarray(0, got));
      }
      case 'ftruncate':
        fs.ftruncateSync(fd(step.handle), step.size);
        return 'ok';
      case 'fstat':
        return statShape(fs.fstatSync(fd(step.handle)));
      case 'fsync':
        fs.fsyncSync(fd(step.handle));
        return 'ok';
      case 'fallocate': {
        const mode = {
          default: 0,
          keepSize: c.FALLOC_FL_KEEP_SIZE,
          punchHole: c.FALLOC_FL_PUNCH_HOLE | c.FALLOC_FL_KEEP_SIZE,
          punchHoleOnly: c.FALLOC_FL_PUNCH_HOLE,
        }[step.mode];
        sys.fallocate(fd(step.handle), mode, step.offset, step.length);
        return 'ok';
      }
      case 'lseek':
        return `offset ${sys.lseek(fd(step.handle), step.offset, c[step.whence])}`;
      case 'copyFileRange':
        return `copied ${sys.copyFileRange(fd(step.from), step.fromOffset, fd(step.to), step.toOffset, step.length)}`;
      case 'mmapWriteRead':
        return bytesShape(sys.mmapWriteRead(fd(step.handle), step.offset, step.data));
      case 'stat':
        return statShape(fs.statSync(at(step.path)));
      case 'lstat':
        return statShape(fs.lstatSync(at(step.path)));
      case 'readFile':
        return bytesShape(fs.readFileSync(at(step.path)));
      case 'writeFile':
        fs.writeFileSync(at(step.path), step.data);
        return 'ok';
      case 'truncate':
        fs.truncateSync(at(step.path), step.size);
        return 'ok';
      case 'chmod':
        fs.chmodSync(at(step.path), step.mode);
        return 'ok';
      case 'chown':
        fs.chownSync(at(step.path), step.uid, step.gid);
        return 'ok';
      case 'utimes': {
        fs.utimesSync(at(step.path), step.atime, step.mtime);
        const st = fs.statSync(at(step.path));
        return `atime=${st.atimeMs} mtime=${st.mtimeMs}`;
      }
      case 'unlink':
        fs.unlinkSync(at(step.path));
        return 'ok';
      case 'rename':
        if (step.flags === undefined) fs.renameSync(at(step.from), at(step.to));
        else sys.renameat2(at(step.from), at(step.to), step.flags === 'NOREPLACE' ? c.RENAME_NOREPLACE : c.RENAME_EXCHANGE);
        return 'ok';
      case 'link':
        fs.linkSync(at(step.from), at(step.to));
        return 'ok';
      case 'symlink':
        fs.symlinkSync(step.target, at(step.path));
        return 'ok';
      case 'readlink':
        return JSON.stringify(fs.readlinkSync(at(step.path)));
      case 'readdir':
        return JSON.stringify(
          fs
            .readdirSync(at(step.path), { withFileTypes: true })
            .map((e) => `${e.name}${e.isDirectory() ? '/' : e.isSymbolicLink() ? '@' : ''}`)
            .sort(),
        );
      case 'access': {
        const mode = { F: fs.constants.F_OK, R: fs.constants.R_OK, W: fs.constants.W_OK, X: fs.constants.X_OK }[step.mode];
        fs.accessSync(at(step.path), mode);
        return 'ok';
      }
      case 'mknod':
        sys.mknod(at(step.path), step.mode, 0);
        return 'ok';
      case 'setxattr': {
        const flags = step.flags === 'CREATE' ? c.XATTR_CREATE : step.flags === 'REPLACE' ? c.XATTR_REPLACE : 0;
        sys.setxattr(at(step.path), step.name, step.value, flags);
        return 'ok';
      }
      case 'getxattr':
        return bytesShape(sys.getxattr(at(step.path), step.name));
      case 'listxattr':
        return JSON.stringify(sys.listxattr(at(step.path)).filter((n) => n.startsWith('user.')).sort());
      case 'removexattr':
        sys.removexattr(at(step.path), step.name);
        return 'ok';
    }
  }
}

/** Lines that differ, as `- expected` / `+ actual` pairs; empty when the transcripts agree. */
export function diffTranscripts(expected: readonly string[], actual: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < Math.max(expected.length, actual.length); i++) {
    if (expected[i] !== actual[i]) out.push(`- ${expected[i] ?? '(missing)'}`, `+ ${actual[i] ?? '(missing)'}`);
  }
  return out;
}

const big = 'B'.repeat(10_000);

/** One pass over every operation the issue lists, with the edge cases whose errno matters. */
export const STANDARD_SCRIPT: readonly Step[] = [
  { op: 'mkdir', path: 'd', mode: 0o755 },
  { op: 'mkdir', path: 'd', mode: 0o755 },
  { op: 'mkdir', path: 'missing/d', mode: 0o755 },
  { op: 'stat', path: 'd' },
  { op: 'open', handle: 'a', path: 'd/a', flags: 'wx+', mode: 0o644 },
  { op: 'open', handle: 'dup', path: 'd/a', flags: 'wx', mode: 0o644 },
  { op: 'pwrite', handle: 'a', offset: 0, data: 'hello world' },
  { op: 'pwrite', handle: 'a', offset: 20, data: 'after a gap' },
  { op: 'pread', handle: 'a', offset: 0, length: 64 },
  { op: 'pread', handle: 'a', offset: 100, length: 8 },
  { op: 'fstat', handle: 'a' },
  { op: 'fsync', handle: 'a' },
  { op: 'ftruncate', handle: 'a', size: 5 },
  { op: 'pread', handle: 'a', offset: 0, length: 64 },
  { op: 'ftruncate', handle: 'a', size: 9000 },
  { op: 'lseek', handle: 'a', offset: 0, whence: 'SEEK_END' },
  { op: 'lseek', handle: 'a', offset: 0, whence: 'SEEK_DATA' },
  { op: 'lseek', handle: 'a', offset: 9000, whence: 'SEEK_DATA' },
  { op: 'pwrite', handle: 'a', offset: 0, data: big },
  { op: 'lseek', handle: 'a', offset: 0, whence: 'SEEK_HOLE' },
  { op: 'fallocate', handle: 'a', mode: 'punchHole', offset: 4096, length: 4096 },
  { op: 'lseek', handle: 'a', offset: 0, whence: 'SEEK_HOLE' },
  { op: 'lseek', handle: 'a', offset: 4096, whence: 'SEEK_DATA' },
  { op: 'fallocate', handle: 'a', mode: 'punchHoleOnly', offset: 0, length: 4096 },
  { op: 'fallocate', handle: 'a', mode: 'keepSize', offset: 0, length: 65536 },
  { op: 'fallocate', handle: 'a', mode: 'default', offset: 0, length: 20000 },
  { op: 'fstat', handle: 'a' },
  { op: 'pread', handle: 'a', offset: 0, length: 20000 },
  { op: 'mmapWriteRead', handle: 'a', offset: 4000, data: 'mapped bytes across a page edge' },
  { op: 'pread', handle: 'a', offset: 3990, length: 60 },
  { op: 'mmapWriteRead', handle: 'a', offset: 19990, data: 'past the end of file' },
  { op: 'open', handle: 'b', path: 'd/b', flags: 'w+', mode: 0o600 },
  { op: 'copyFileRange', from: 'a', fromOffset: 3990, to: 'b', toOffset: 10, length: 60 },
  { op: 'copyFileRange', from: 'a', fromOffset: 50000, to: 'b', toOffset: 0, length: 60 },
  { op: 'fstat', handle: 'b' },
  { op: 'pread', handle: 'b', offset: 0, length: 100 },
  { op: 'close', handle: 'b' },
  { op: 'open', handle: 'app', path: 'd/b', flags: 'a' },
  { op: 'pwrite', handle: 'app', offset: 0, data: 'appended' },
  { op: 'close', handle: 'app' },
  { op: 'readFile', path: 'd/b' },
  { op: 'open', handle: 't', path: 'd/b', flags: 'w' },
  { op: 'fstat', handle: 't' },
  { op: 'close', handle: 't' },
  { op: 'chmod', path: 'd/a', mode: 0o4751 },
  { op: 'stat', path: 'd/a' },
  { op: 'chown', path: 'd/a', uid: 1000, gid: 1001 },
  { op: 'stat', path: 'd/a' },
  { op: 'chown', path: 'd/a', uid: 0, gid: 0 },
  { op: 'utimes', path: 'd/a', atime: 1_000_000_000.5, mtime: 1_234_567_890.25 },
  { op: 'truncate', path: 'd/a', size: 3 },
  { op: 'truncate', path: 'd', size: 3 },
  { op: 'access', path: 'd/a', mode: 'F' },
  { op: 'access', path: 'd/a', mode: 'X' },
  { op: 'chmod', path: 'd/a', mode: 0o600 },
  { op: 'access', path: 'd/a', mode: 'X' },
  { op: 'access', path: 'd/nope', mode: 'R' },
  { op: 'mknod', path: 'd/node', mode: 0o100640 },
  { op: 'mknod', path: 'd/node', mode: 0o100640 },
  { op: 'stat', path: 'd/node' },
  { op: 'link', from: 'd/a', to: 'd/hard' },
  { op: 'link', from: 'd/a', to: 'd/hard' },
  { op: 'link', from: 'd', to: 'd2' },
  { op: 'stat', path: 'd/hard' },
  { op: 'symlink', target: 'a', path: 'd/sym' },
  { op: 'symlink', target: 'nowhere', path: 'd/dangling' },
  { op: 'readlink', path: 'd/sym' },
  { op: 'readlink', path: 'd/a' },
  { op: 'lstat', path: 'd/sym' },
  { op: 'stat', path: 'd/sym' },
  { op: 'stat', path: 'd/dangling' },
  { op: 'readdir', path: 'd' },
  { op: 'writeFile', path: 'x', data: 'X' },
  { op: 'writeFile', path: 'y', data: 'Y' },
  { op: 'rename', from: 'x', to: 'y', flags: 'NOREPLACE' },
  { op: 'rename', from: 'x', to: 'y', flags: 'EXCHANGE' },
  { op: 'readFile', path: 'x' },
  { op: 'rename', from: 'x', to: 'z', flags: 'EXCHANGE' },
  { op: 'rename', from: 'x', to: 'y' },
  { op: 'readFile', path: 'y' },
  { op: 'rename', from: 'y', to: 'd' },
  { op: 'mkdir', path: 'e', mode: 0o700 },
  { op: 'mkdir', path: 'e2', mode: 0o700 },
  { op: 'rename', from: 'd', to: 'e2' },
  { op: 'stat', path: 'd' },
  { op: 'rename', from: 'e2', to: 'y' },
  { op: 'rename', from: 'y', to: 'e/y' },
  { op: 'rename', from: 'e', to: 'e/inside' },
  { op: 'stat', path: 'e' },
  { op: 'rmdir', path: 'e' },
  { op: 'unlink', path: 'e' },
  { op: 'unlink', path: 'e/y' },
  { op: 'rmdir', path: 'e' },
  { op: 'rmdir', path: 'e/y' },
  { op: 'unlink', path: 'e2/a' },
  { op: 'fstat', handle: 'a' },
  { op: 'pwrite', handle: 'a', offset: 0, data: 'still here' },
  { op: 'pread', handle: 'a', offset: 0, length: 10 },
  { op: 'stat', path: 'e2/hard' },
  { op: 'unlink', path: 'e2/hard' },
  { op: 'fstat', handle: 'a' },
  { op: 'pread', handle: 'a', offset: 0, length: 10 },
  { op: 'close', handle: 'a' },
  { op: 'setxattr', path: 'e2/node', name: 'user.k', value: 'v1' },
  { op: 'setxattr', path: 'e2/node', name: 'user.k', value: 'v2', flags: 'CREATE' },
  { op: 'setxattr', path: 'e2/node', name: 'user.other', value: 'o', flags: 'REPLACE' },
  { op: 'getxattr', path: 'e2/node', name: 'user.k' },
  { op: 'listxattr', path: 'e2/node' },
  { op: 'removexattr', path: 'e2/node', name: 'user.k' },
  { op: 'getxattr', path: 'e2/node', name: 'user.k' },
  { op: 'readdir', path: 'e2' },
  { op: 'stat', path: 'e2' },
  { op: 'readdir', path: '.' },
];
