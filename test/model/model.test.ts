// The reference model itself, and proof the model test can fail: references with one injected
// bug each must be caught on tmpfs and shrunk to a handful of operations.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTmpfs, type TestDir } from '../support/tmpdirs';
import { skipping, tmpfsMountUnavailable } from '../support/capabilities';
import { ModelMismatch, modelOpArb, ReferenceFs, runModelSequence, writeBytes, type ModelOp } from './model';
import { chooseSeed } from './suite';

describe('reference model', () => {
  it('appends at the end whatever the offset, zero-fills gaps, and truncation never resurrects bytes', () => {
    const ref = new ReferenceFs();
    ref.open('a', 'w+');
    ref.write(0, 5, Buffer.from('xyz'));
    expect(ref.contents('a')).toEqual(Buffer.from([0, 0, 0, 0, 0, 0x78, 0x79, 0x7a]));
    ref.open('a', 'a');
    ref.write(1, 0, Buffer.from('!'));
    expect(ref.contents('a').subarray(-2).toString()).toBe('z!');
    ref.ftruncate(0, 2);
    ref.ftruncate(0, 6);
    expect(ref.contents('a')).toEqual(Buffer.alloc(6));
    expect(() => ref.read(1, 0, 1)).toThrow('EBADF');
  });

  it('counts links through link, rename over a file and unlink', () => {
    const ref = new ReferenceFs();
    ref.open('a', 'w');
    ref.open('b', 'w');
    ref.link('a', 'c');
    expect(ref.stat('c').nlink).toBe(2);
    ref.rename('a', 'b');
    expect(ref.fstat(1).nlink).toBe(0);
    expect(ref.fstat(0).nlink).toBe(2);
    ref.rename('b', 'c');
    expect(ref.fstat(0).nlink).toBe(2);
    ref.unlink('b');
    ref.unlink('c');
    expect(ref.fstat(0).nlink).toBe(0);
    expect(() => ref.stat('c')).toThrow('ENOENT');
  });

  it('write data is a pure function of length and seed', () => {
    expect(writeBytes(64, 7).equals(writeBytes(64, 7))).toBe(true);
    expect(writeBytes(64, 7).equals(writeBytes(64, 8))).toBe(false);
  });

  it('rejects a malformed EPHEMERA_MODEL_SEED with E_BAD_CONFIG', () => {
    const saved = process.env.EPHEMERA_MODEL_SEED;
    process.env.EPHEMERA_MODEL_SEED = 'banana';
    try {
      expect(() => chooseSeed()).toThrow(expect.objectContaining({ code: 'E_BAD_CONFIG' }));
    } finally {
      if (saved === undefined) delete process.env.EPHEMERA_MODEL_SEED;
      else process.env.EPHEMERA_MODEL_SEED = saved;
    }
  });
});

// Each subclass gets one thing wrong the way a FUSE file system might.
class IgnoresAppend extends ReferenceFs {
  override open(name: string, flags: Parameters<ReferenceFs['open']>[1]): void {
    super.open(name, flags);
    const handle = this.handles[this.handles.length - 1];
    if (handle !== undefined) handle.append = false;
  }
}
class TruncateKeepsOldBytes extends ReferenceFs {
  override ftruncate(index: number, size: number): void {
    const handle = this.handles[index];
    if (handle === undefined || !handle.writable) return super.ftruncate(index, size);
    // Grows or shrinks the size without zeroing the bytes beyond it.
    if (size > handle.inode.data.length) return super.ftruncate(index, size);
    handle.inode.size = size;
  }
}
class RenameLeavesTargetLinked extends ReferenceFs {
  override rename(from: string, to: string): void {
    const target = this.names.get(to);
    const before = target?.links;
    super.rename(from, to);
    if (target !== undefined && before !== undefined && this.names.get(to) !== target) target.links = before;
  }
}

const HUNT_SEED = 0x5eed0009;

const noTmpfs = tmpfsMountUnavailable();
describe.skipIf(noTmpfs !== undefined && skipping('injected-bug hunt on tmpfs', noTmpfs) !== undefined)('the model test catches injected bugs on tmpfs', () => {
  let tmpfs: TestDir;
  let counter = 0;
  beforeAll(async () => {
    tmpfs = await makeTmpfs({ size: '128m' });
  });
  afterAll(async () => {
    await tmpfs?.teardown();
  });

  const hunt = (makeReference: () => ReferenceFs) => {
    const result = fc.check(
      // Short sequences: long enough to meet each bug within 300 runs, short enough to shrink fast.
      fc.property(fc.array(modelOpArb, { maxLength: 60, size: 'max' }), (ops: ModelOp[]) => {
        const dir = path.join(tmpfs.dir, `hunt-${counter++}`);
        fs.mkdirSync(dir);
        try {
          runModelSequence(dir, ops, makeReference());
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }),
      // A fixed seed: these tests prove the detector works, so they must not depend on luck (a
      // random seed once met the stale-bytes bug late enough that the shrink bound failed).
      { seed: chooseSeed(HUNT_SEED), numRuns: 300 },
    );
    expect(result.failed, 'the injected bug went unnoticed').toBe(true);
    expect(result.errorInstance).toBeInstanceOf(ModelMismatch);
    const shrunk = result.counterexample?.[0] ?? [];
    // Shrinking must get down to the few operations that show the bug.
    expect(shrunk.length).toBeLessThanOrEqual(8);
    return shrunk;
  };

  it('ignoring O_APPEND', () => {
    const shrunk = hunt(() => new IgnoresAppend());
    expect(shrunk.some((op) => op.op === 'open' && op.flags.startsWith('a'))).toBe(true);
  });

  it('truncate that keeps stale bytes past the new size', () => {
    const shrunk = hunt(() => new TruncateKeepsOldBytes());
    expect(shrunk.some((op) => op.op === 'ftruncate')).toBe(true);
  });

  it('rename over a file that leaves the replaced inode linked', () => {
    const shrunk = hunt(() => new RenameLeavesTargetLinked());
    expect(shrunk.some((op) => op.op === 'rename')).toBe(true);
  });
});
