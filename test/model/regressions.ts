// Sequences pinned after a failure, replayed before the random runs. Paste fast-check's shrunk
// counterexample here as-is (a plain array of ModelOp), with a line saying what it caught.
import type { ModelOp } from './model';

export interface PinnedSequence {
  name: string;
  ops: ModelOp[];
}

export const REGRESSIONS: PinnedSequence[] = [
  {
    // A zero-byte write must still reach write(2), which refuses a read-only descriptor (EBADF).
    name: 'zero-length write on a read-only handle',
    ops: [
      { op: 'open', name: 0, flags: 'w' },
      { op: 'open', name: 0, flags: 'r' },
      { op: 'write', handle: 1, offset: 0, length: 0, seed: 0 },
    ],
  },
  {
    // Node answers a zero-length read without read(2), so no EBADF on a write-only handle.
    name: 'zero-length read on a write-only handle',
    ops: [
      { op: 'open', name: 0, flags: 'a' },
      { op: 'read', handle: 0, offset: 0, length: 0 },
    ],
  },
  {
    // Shrunk from the injected "ignores O_APPEND" fault (model.test.ts): an O_APPEND handle must
    // append even after another handle on the file was closed.
    name: 'append after the creating handle closed',
    ops: [
      { op: 'open', name: 0, flags: 'w+' },
      { op: 'open', name: 0, flags: 'a' },
      { op: 'close', handle: 0 },
      { op: 'write', handle: 0, offset: 1, length: 1, seed: 0 },
    ],
  },
  {
    // Shrunk from the injected "truncate keeps stale bytes" fault: bytes cut off by ftruncate
    // must read back as zeros when a later write extends the file again.
    name: 'write past a truncation point does not resurrect old bytes',
    ops: [
      { op: 'open', name: 0, flags: 'wx+' },
      { op: 'write', handle: 0, offset: 0, length: 1, seed: 0 },
      { op: 'write', handle: 0, offset: 4096, length: 1, seed: 0 },
      { op: 'ftruncate', handle: 0, size: 0 },
      { op: 'write', handle: 0, offset: 1, length: 1, seed: 0 },
    ],
  },
  {
    // Shrunk from the injected "rename leaves the target linked" fault: an open file replaced
    // by rename reports nlink 0.
    name: 'rename over an open file drops its link count to 0',
    ops: [
      { op: 'open', name: 3, flags: 'wx+' },
      { op: 'open', name: 0, flags: 'a' },
      { op: 'rename', from: 0, to: 3 },
      { op: 'fstat', handle: 0 },
    ],
  },
  {
    // Shrunk from the injected "ignores O_APPEND" fault (model.test.ts): an O_APPEND handle must
    // append even after another handle on the file was closed.
    name: 'append after the creating handle closed',
    ops: [
      { op: 'open', name: 0, flags: 'w+' },
      { op: 'open', name: 0, flags: 'a' },
      { op: 'close', handle: 0 },
      { op: 'write', handle: 0, offset: 1, length: 1, seed: 0 },
    ],
  },
  {
    // Shrunk from the injected "truncate keeps stale bytes" fault: bytes cut off by ftruncate
    // must read back as zeros when a later write extends the file again.
    name: 'write past a truncation point does not resurrect old bytes',
    ops: [
      { op: 'open', name: 0, flags: 'wx+' },
      { op: 'write', handle: 0, offset: 0, length: 1, seed: 0 },
      { op: 'write', handle: 0, offset: 4096, length: 1, seed: 0 },
      { op: 'ftruncate', handle: 0, size: 0 },
      { op: 'write', handle: 0, offset: 1, length: 1, seed: 0 },
    ],
  },
  {
    // Shrunk from the injected "rename leaves the target linked" fault: an open file replaced
    // by rename reports nlink 0.
    name: 'rename over an open file drops its link count to 0',
    ops: [
      { op: 'open', name: 3, flags: 'wx+' },
      { op: 'open', name: 0, flags: 'a' },
      { op: 'rename', from: 0, to: 3 },
      { op: 'fstat', handle: 0 },
    ],
  },
];
