// Model-based test of file data and names (after mountpoint-s3's reftests): random sequences of
// open/write/read/truncate/rename/link/unlink/close over several handles and a few names run on a
// real directory and on an in-memory reference, and every result (bytes, sizes, link counts,
// errno names) must agree. Operations address the state by index (the n-th open handle, the n-th
// name of a small pool), so a shrunk sequence stays meaningful and replays as plain JSON.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';

export const NAME_POOL = ['a', 'b', 'c', 'd'] as const;
export const MAX_HANDLES = 6;
const PAGE = 4096;

export type OpenFlags = 'r' | 'r+' | 'w' | 'w+' | 'a' | 'a+' | 'wx+';

export type ModelOp =
  | { op: 'open'; name: number; flags: OpenFlags }
  | { op: 'close'; handle: number }
  | { op: 'write'; handle: number; offset: number; length: number; seed: number }
  | { op: 'read'; handle: number; offset: number; length: number }
  | { op: 'ftruncate'; handle: number; size: number }
  | { op: 'fstat'; handle: number }
  | { op: 'truncate'; name: number; size: number }
  | { op: 'stat'; name: number }
  | { op: 'rename'; from: number; to: number }
  | { op: 'link'; from: number; to: number }
  | { op: 'unlink'; name: number };

interface RefInode {
  id: number;
  data: Buffer;
  size: number;
  links: number;
}

interface RefHandle {
  inode: RefInode;
  readable: boolean;
  writable: boolean;
  append: boolean;
}

const FLAG_BITS: Record<OpenFlags, { readable: boolean; writable: boolean; append: boolean; create: boolean; truncate: boolean; exclusive: boolean }> = {
  r: { readable: true, writable: false, append: false, create: false, truncate: false, exclusive: false },
  'r+': { readable: true, writable: true, append: false, create: false, truncate: false, exclusive: false },
  w: { readable: false, writable: true, append: false, create: true, truncate: true, exclusive: false },
  'w+': { readable: true, writable: true, append: false, create: true, truncate: true, exclusive: false },
  a: { readable: false, writable: true, append: true, create: true, truncate: false, exclusive: false },
  'a+': { readable: true, writable: true, append: true, create: true, truncate: false, exclusive: false },
  'wx+': { readable: true, writable: true, append: false, create: true, truncate: false, exclusive: true },
};

class ModelError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** The in-memory reference: what POSIX (as tmpfs implements it) says each operation returns. */
export class ReferenceFs {
  private nextId = 1;
  readonly names = new Map<string, RefInode>();
  readonly handles: RefHandle[] = [];

  open(name: string, flags: OpenFlags): void {
    const bits = FLAG_BITS[flags];
    let inode = this.names.get(name);
    if (inode !== undefined && bits.exclusive) throw new ModelError('EEXIST');
    if (inode === undefined) {
      if (!bits.create) throw new ModelError('ENOENT');
      inode = { id: this.nextId++, data: Buffer.alloc(0), size: 0, links: 1 };
      this.names.set(name, inode);
    }
    if (bits.truncate) this.resize(inode, 0);
    this.handles.push({ inode, readable: bits.readable, writable: bits.writable, append: bits.append });
  }

  close(index: number): void {
    this.handles.splice(index, 1);
  }

  write(index: number, offset: number, data: Buffer): number {
    const handle = this.handle(index);
    if (!handle.writable) throw new ModelError('EBADF');
    if (data.length === 0) return 0;
    // Linux appends even for pwrite on an O_APPEND descriptor.
    const at = handle.append ? handle.inode.size : offset;
    if (at + data.length > handle.inode.size) this.resize(handle.inode, at + data.length);
    data.copy(handle.inode.data, at);
    return data.length;
  }

  read(index: number, offset: number, length: number): Buffer {
    const handle = this.handle(index);
    // Node's readSync answers a zero-length read itself, without read(2) checking the descriptor.
    if (length === 0) return Buffer.alloc(0);
    if (!handle.readable) throw new ModelError('EBADF');
    const end = Math.min(handle.inode.size, offset + length);
    return end <= offset ? Buffer.alloc(0) : Buffer.from(handle.inode.data.subarray(offset, end));
  }

  ftruncate(index: number, size: number): void {
    const handle = this.handle(index);
    if (!handle.writable) throw new ModelError('EINVAL');
    this.resize(handle.inode, size);
  }

  fstat(index: number): { size: number; nlink: number } {
    const { inode } = this.handle(index);
    return { size: inode.size, nlink: inode.links };
  }

  truncate(name: string, size: number): void {
    this.resize(this.lookup(name), size);
  }

  stat(name: string): { size: number; nlink: number } {
    const inode = this.lookup(name);
    return { size: inode.size, nlink: inode.links };
  }

  rename(from: string, to: string): void {
    const source = this.lookup(from);
    const target = this.names.get(to);
    // Same inode under both names (also from === to): POSIX says do nothing.
    if (target === source) return;
    if (target !== undefined) target.links -= 1;
    this.names.delete(from);
    this.names.set(to, source);
  }

  link(from: string, to: string): void {
    const source = this.lookup(from);
    if (this.names.has(to)) throw new ModelError('EEXIST');
    source.links += 1;
    this.names.set(to, source);
  }

  unlink(name: string): void {
    const inode = this.lookup(name);
    inode.links -= 1;
    this.names.delete(name);
  }

  contents(name: string): Buffer {
    const inode = this.lookup(name);
    return Buffer.from(inode.data.subarray(0, inode.size));
  }

  private lookup(name: string): RefInode {
    const inode = this.names.get(name);
    if (inode === undefined) throw new ModelError('ENOENT');
    return inode;
  }

  private handle(index: number): RefHandle {
    const handle = this.handles[index];
    if (handle === undefined) throw new Error(`model: no handle ${index}`);
    return handle;
  }

  // Bytes past `size` are always kept zero, so growing never resurrects old data.
  private resize(inode: RefInode, size: number): void {
    if (size > inode.data.length) {
      const grown = Buffer.alloc(Math.max(size, inode.data.length * 2));
      inode.data.copy(grown, 0, 0, inode.size);
      inode.data = grown;
    } else if (size < inode.size) {
      inode.data.fill(0, size, inode.size);
    }
    inode.size = size;
  }
}

/** Deterministic bytes for a write, so a sequence is plain data (no byte arrays to shrink). */
export function writeBytes(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let state = (seed >>> 0) || 0x2545f491;
  // Word at a time: the generator is on the hot path of every write the model issues.
  for (let i = 0; i < length; i += 4) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    if (i + 4 <= length) out.writeInt32LE(state | 0, i);
    else for (let j = i; j < length; j++) out[j] = (state >>> ((j - i) * 8)) & 0xff;
  }
  return out;
}

function outcome(fn: () => string): string {
  try {
    return fn();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code !== 'string') throw error;
    return `ERR ${code}`;
  }
}

function describeBytes(data: Buffer): string {
  if (data.length === 0) return 'bytes 0';
  return `bytes ${data.length} md5=${createHash('md5').update(data).digest('hex').slice(0, 16)}`;
}

export class ModelMismatch extends Error {
  constructor(
    readonly step: number,
    readonly op: ModelOp | 'final',
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`model mismatch at step ${step} ${JSON.stringify(op)}: expected ${expected}, got ${actual}`);
    this.name = 'ModelMismatch';
  }
}

export interface RunStats {
  /** Operations that reached both the file system and the model (no-ops skipped). */
  executed: number;
}

/**
 * Replays `ops` in `dir` (which must be empty) and on a fresh reference; throws ModelMismatch at
 * the first disagreement. Every descriptor it opens is closed before it returns or throws.
 */
export function runModelSequence(dir: string, ops: readonly ModelOp[], reference = new ReferenceFs()): RunStats {
  const fds: number[] = [];
  const at = (index: number) => path.join(dir, NAME_POOL[index % NAME_POOL.length]!);
  const nameOf = (index: number) => NAME_POOL[index % NAME_POOL.length]!;
  let executed = 0;
  try {
    ops.forEach((op, step) => {
      // Handle indices wrap over the handles open right now; with none open the op is a no-op.
      const pick = (handle: number) => handle % fds.length;
      if ('handle' in op && fds.length === 0) return;
      if (op.op === 'open' && fds.length >= MAX_HANDLES) return;
      let expected: string;
      let actual: string;
      switch (op.op) {
        case 'open': {
          expected = outcome(() => (reference.open(nameOf(op.name), op.flags), 'ok'));
          actual = outcome(() => {
            fds.push(fs.openSync(at(op.name), op.flags, 0o644));
            return 'ok';
          });
          break;
        }
        case 'close': {
          const index = pick(op.handle);
          expected = outcome(() => (reference.close(index), 'ok'));
          actual = outcome(() => {
            const [fd] = fds.splice(index, 1);
            fs.closeSync(fd!);
            return 'ok';
          });
          break;
        }
        case 'write': {
          const index = pick(op.handle);
          const data = writeBytes(op.length, op.seed);
          expected = outcome(() => `wrote ${reference.write(index, op.offset, data)}`);
          actual = outcome(() => {
            // At least one call even for zero bytes: write(2) still checks the descriptor (EBADF).
            let done = fs.writeSync(fds[index]!, data, 0, data.length, op.offset);
            while (done < data.length) done += fs.writeSync(fds[index]!, data, done, data.length - done, op.offset + done);
            return `wrote ${done}`;
          });
          break;
        }
        case 'read': {
          const index = pick(op.handle);
          expected = outcome(() => describeBytes(reference.read(index, op.offset, op.length)));
          actual = outcome(() => {
            const buffer = Buffer.alloc(op.length);
            let done = 0;
            while (done < op.length) {
              const got = fs.readSync(fds[index]!, buffer, done, op.length - done, op.offset + done);
              if (got === 0) break;
              done += got;
            }
            return describeBytes(buffer.subarray(0, done));
          });
          break;
        }
        case 'ftruncate': {
          const index = pick(op.handle);
          expected = outcome(() => (reference.ftruncate(index, op.size), 'ok'));
          actual = outcome(() => (fs.ftruncateSync(fds[index]!, op.size), 'ok'));
          break;
        }
        case 'fstat': {
          const index = pick(op.handle);
          expected = outcome(() => JSON.stringify(reference.fstat(index)));
          actual = outcome(() => {
            const st = fs.fstatSync(fds[index]!);
            return JSON.stringify({ size: st.size, nlink: st.nlink });
          });
          break;
        }
        case 'truncate':
          expected = outcome(() => (reference.truncate(nameOf(op.name), op.size), 'ok'));
          actual = outcome(() => (fs.truncateSync(at(op.name), op.size), 'ok'));
          break;
        case 'stat':
          expected = outcome(() => JSON.stringify(reference.stat(nameOf(op.name))));
          actual = outcome(() => {
            const st = fs.statSync(at(op.name));
            return JSON.stringify({ size: st.size, nlink: st.nlink });
          });
          break;
        case 'rename':
          expected = outcome(() => (reference.rename(nameOf(op.from), nameOf(op.to)), 'ok'));
          actual = outcome(() => (fs.renameSync(at(op.from), at(op.to)), 'ok'));
          break;
        case 'link':
          expected = outcome(() => (reference.link(nameOf(op.from), nameOf(op.to)), 'ok'));
          actual = outcome(() => (fs.linkSync(at(op.from), at(op.to)), 'ok'));
          break;
        case 'unlink':
          expected = outcome(() => (reference.unlink(nameOf(op.name)), 'ok'));
          actual = outcome(() => (fs.unlinkSync(at(op.name)), 'ok'));
          break;
      }
      executed += 1;
      if (expected !== actual) throw new ModelMismatch(step, op, expected, actual);
    });
    checkFinalState(dir, reference, ops.length);
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
  return { executed };
}

// After the sequence: the same names exist, each with the same bytes.
function checkFinalState(dir: string, reference: ReferenceFs, step: number): void {
  const expectedNames = [...reference.names.keys()].sort().join(',');
  const actualNames = fs.readdirSync(dir).sort().join(',');
  if (expectedNames !== actualNames) throw new ModelMismatch(step, 'final', `names [${expectedNames}]`, `names [${actualNames}]`);
  for (const name of reference.names.keys()) {
    const expected = describeBytes(reference.contents(name));
    const actual = describeBytes(fs.readFileSync(path.join(dir, name)));
    if (expected !== actual) throw new ModelMismatch(step, 'final', `${name}: ${expected}`, `${name}: ${actual}`);
  }
}

// Offsets cluster where file systems get it wrong: at 0, around page edges, past EOF.
const offsetArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 3 * PAGE }) },
  { weight: 3, arbitrary: fc.tuple(fc.integer({ min: 0, max: 64 }), fc.integer({ min: -3, max: 3 })).map(([page, delta]) => Math.max(0, page * PAGE + delta)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 1 << 20 }) },
);
const lengthArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 300 }) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 3 * PAGE }) },
  { weight: 1, arbitrary: fc.integer({ min: PAGE, max: 64 * 1024 }) },
);
const nameArb = fc.integer({ min: 0, max: NAME_POOL.length - 1 });
const handleArb = fc.nat({ max: MAX_HANDLES * 4 });
const flagsArb = fc.constantFrom<OpenFlags>('r', 'r+', 'w', 'w+', 'a', 'a+', 'wx+');

export const modelOpArb: fc.Arbitrary<ModelOp> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('open' as const), name: nameArb, flags: flagsArb }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('close' as const), handle: handleArb }) },
  { weight: 8, arbitrary: fc.record({ op: fc.constant('write' as const), handle: handleArb, offset: offsetArb, length: lengthArb, seed: fc.nat() }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('read' as const), handle: handleArb, offset: offsetArb, length: lengthArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('ftruncate' as const), handle: handleArb, size: offsetArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('fstat' as const), handle: handleArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), name: nameArb, size: offsetArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('stat' as const), name: nameArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rename' as const), from: nameArb, to: nameArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('link' as const), from: nameArb, to: nameArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('unlink' as const), name: nameArb }) },
);
