// The dispatcher driven with hand-written request bytes, no mount: every field of every fixture
// is spelled out, as the kernel would send it (include/uapi/linux/fuse.h, protocol 7.45).
import { describe, expect, it } from 'vitest';
import { loadCore } from '../../fusefs/native';

const OP = { LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, MKDIR: 9, UNLINK: 10, INIT: 26, CREATE: 35, BATCH_FORGET: 42, READDIR: 28, OPENDIR: 27, INTERRUPT: 36 };
const ENOENT = 2, EIO = 5, EINVAL = 22, ENOSYS = 38, EPROTO = 71, EEXIST = 17;

let unique = 100n;
/** fuse_in_header (40 bytes) + body. */
function request(opcode: number, nodeid: bigint, body: Buffer, opts: { len?: number; uid?: number } = {}): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32LE(opts.len ?? 40 + body.length, 0); // len
  h.writeUInt32LE(opcode, 4); //                       opcode
  h.writeBigUInt64LE(unique++, 8); //                  unique
  h.writeBigUInt64LE(nodeid, 16); //                   nodeid
  h.writeUInt32LE(opts.uid ?? 0, 24); //               uid
  h.writeUInt32LE(0, 28); //                           gid
  h.writeUInt32LE(1234, 32); //                        pid
  h.writeUInt16LE(0, 36); //                           total_extlen
  return Buffer.concat([h, body]);
}
function initBody(major = 7, minor = 45, flags = 0xffffffff, flags2 = 0xffffffff): Buffer {
  const b = Buffer.alloc(64); // fuse_init_in
  b.writeUInt32LE(major, 0); //    major
  b.writeUInt32LE(minor, 4); //    minor
  b.writeUInt32LE(128 << 10, 8); // max_readahead
  b.writeUInt32LE(flags >>> 0, 12); // flags (FUSE_INIT_EXT set: flags2 is valid)
  b.writeUInt32LE(flags2 >>> 0, 16); // flags2
  return b;
}
const cstr = (...names: string[]) => Buffer.concat(names.map((n) => Buffer.from(n + '\0')));
function mkdirBody(name: string, mode = 0o755): Buffer {
  const b = Buffer.alloc(8); // fuse_mkdir_in
  b.writeUInt32LE(mode, 0); //   mode
  b.writeUInt32LE(0o022, 4); //  umask
  return Buffer.concat([b, cstr(name)]);
}
/** fuse_out_header: len, error (negative errno), unique. */
function header(reply: Buffer | null) {
  expect(reply).not.toBeNull();
  const r = reply!;
  return { len: r.readUInt32LE(0), error: Math.abs(r.readInt32LE(4)), unique: r.readBigUInt64LE(8), body: r.subarray(16) };
}

function newFs() {
  const core = loadCore();
  return new core.Session({ mode: 'none' });
}
function initialized() {
  const s = newFs();
  const r = header(s.dispatch(request(OP.INIT, 0n, initBody())));
  expect(r.error).toBe(0);
  return s;
}

describe('dispatcher (bytes in, bytes out, no mount)', () => {
  it('answers INIT with our major/minor and a 64-byte fuse_init_out', () => {
    const s = newFs();
    const r = header(s.dispatch(request(OP.INIT, 0n, initBody())));
    expect(r.error).toBe(0);
    expect(r.len).toBe(16 + 64);
    expect(r.body.readUInt32LE(0)).toBe(7); //  major
    expect(r.body.readUInt32LE(4)).toBe(45); // minor
    expect(r.body.readUInt32LE(20)).toBe(1 << 20); // max_write
    expect(r.body.readUInt16LE(28)).toBe(256); //    max_pages
    const flags = r.body.readUInt32LE(12);
    expect(flags & (1 << 13)).not.toBe(0); // FUSE_DO_READDIRPLUS
    expect(flags & (1 << 18)).not.toBe(0); // FUSE_PARALLEL_DIROPS
    expect(flags & (1 << 16)).toBe(0); //     no writeback cache in mode "none"
    expect(s.info().initialized).toBe(true);
  });

  it('negotiates down to an older kernel minor and refuses one that is too old', () => {
    const s = newFs();
    expect(header(s.dispatch(request(OP.INIT, 0n, initBody(7, 38)))).body.readUInt32LE(4)).toBe(38);
    const old = newFs();
    expect(header(old.dispatch(request(OP.INIT, 0n, initBody(7, 20)))).error).toBe(EPROTO);
  });

  it('refuses anything before INIT with EIO', () => {
    const s = newFs();
    expect(header(s.dispatch(request(OP.LOOKUP, 1n, cstr('x')))).error).toBe(EIO);
  });

  it('answers unknown opcodes ENOSYS and counts them', () => {
    const s = initialized();
    const r = header(s.dispatch(request(9999, 1n, Buffer.alloc(0))));
    expect(r.error).toBe(ENOSYS);
    expect(s.counters().ops.UNKNOWN).toEqual({ count: 1, errors: 1 });
  });

  it('rejects a header whose len disagrees with the bytes, and bodies shorter than their struct', () => {
    const s = initialized();
    expect(header(s.dispatch(request(OP.LOOKUP, 1n, cstr('x'), { len: 99 }))).error).toBe(EINVAL);
    expect(header(s.dispatch(request(OP.SETATTR, 1n, Buffer.alloc(10)))).error).toBe(EINVAL); // fuse_setattr_in is 88
    expect(s.counters().malformed).toBe(2);
  });

  it('drops a buffer shorter than a header without a reply (there is no unique to answer)', () => {
    const s = initialized();
    expect(s.dispatch(Buffer.alloc(12))).toBeNull();
    expect(s.counters().malformed).toBe(1);
  });

  it('refuses names without their NUL terminator instead of reading past the buffer', () => {
    const s = initialized();
    expect(header(s.dispatch(request(OP.LOOKUP, 1n, Buffer.from('abc')))).error).toBe(EINVAL);
    expect(header(s.dispatch(request(OP.MKDIR, 1n, Buffer.concat([Buffer.alloc(8), Buffer.from('d')])))).error).toBe(EINVAL);
  });

  it('mkdir then lookup returns the same nodeid; a missing name is a cached negative entry', () => {
    const s = initialized();
    const mk = header(s.dispatch(request(OP.MKDIR, 1n, mkdirBody('d'))));
    expect(mk.error).toBe(0);
    expect(mk.len).toBe(16 + 128); // fuse_entry_out
    const nodeid = mk.body.readBigUInt64LE(0);
    expect(nodeid).toBeGreaterThan(1n);
    expect(mk.body.readUInt32LE(40 + 60) & 0o170000).toBe(0o040000); // attr.mode is a directory
    const lk = header(s.dispatch(request(OP.LOOKUP, 1n, cstr('d'))));
    expect(lk.body.readBigUInt64LE(0)).toBe(nodeid);
    const miss = header(s.dispatch(request(OP.LOOKUP, 1n, cstr('nope'))));
    expect(miss.error).toBe(0);
    expect(miss.body.readBigUInt64LE(0)).toBe(0n); // nodeid 0: negative entry
    expect(miss.body.readBigUInt64LE(16)).toBeGreaterThan(0n); // entry_valid: cached
    expect(header(s.dispatch(request(OP.MKDIR, 1n, mkdirBody('d')))).error).toBe(EEXIST);
    expect(header(s.dispatch(request(OP.GETATTR, 999n, Buffer.alloc(16)))).error).toBe(ENOENT);
  });

  it('FORGET and BATCH_FORGET get no reply; a batch claiming more entries than it carries is dropped', () => {
    const s = initialized();
    const nodeid = header(s.dispatch(request(OP.MKDIR, 1n, mkdirBody('d')))).body.readBigUInt64LE(0);
    const forget = Buffer.alloc(8);
    forget.writeBigUInt64LE(1n, 0); // nlookup
    expect(s.dispatch(request(OP.FORGET, nodeid, forget))).toBeNull();
    const batch = Buffer.alloc(8);
    batch.writeUInt32LE(5, 0); // count: 5, but no fuse_forget_one follows
    expect(s.dispatch(request(OP.BATCH_FORGET, 0n, batch))).toBeNull();
    expect(s.counters().malformed).toBe(1);
  });

  it('INTERRUPT gets no reply (every handler answers at once: nothing waits to be interrupted); a short one is malformed', () => {
    const s = initialized();
    const target = unique; // the request it would interrupt
    header(s.dispatch(request(OP.MKDIR, 1n, mkdirBody('i'))));
    const body = Buffer.alloc(8); // fuse_interrupt_in
    body.writeBigUInt64LE(target, 0); // unique of the interrupted request
    expect(s.dispatch(request(OP.INTERRUPT, 0n, body))).toBeNull();
    expect(s.counters().ops.INTERRUPT?.count).toBe(1);
    const before = s.counters().malformed;
    expect(s.dispatch(request(OP.INTERRUPT, 0n, Buffer.alloc(4)))).toBeNull();
    expect(s.counters().malformed).toBe(before + 1);
  });

  it('lists a directory with ".", ".." and entries, resuming at the cookie offset', () => {
    const s = initialized();
    for (const n of ['a', 'b', 'c']) header(s.dispatch(request(OP.MKDIR, 1n, mkdirBody(n))));
    const read = (offset: bigint) => {
      const b = Buffer.alloc(40); // fuse_read_in
      b.writeBigUInt64LE(0n, 0); // fh
      b.writeBigUInt64LE(offset, 8); // offset
      b.writeUInt32LE(4096, 16); // size
      const r = header(s.dispatch(request(OP.READDIR, 1n, b)));
      const names: [string, bigint][] = [];
      for (let p = 0; p < r.body.length; ) {
        const off = r.body.readBigUInt64LE(p + 8), namelen = r.body.readUInt32LE(p + 16);
        names.push([r.body.subarray(p + 24, p + 24 + namelen).toString(), off]);
        p += (24 + namelen + 7) & ~7;
      }
      return names;
    };
    const all = read(0n);
    expect(all.map(([n]) => n)).toEqual(['.', '..', 'a', 'b', 'c']);
    const afterA = all[2]![1];
    expect(read(afterA).map(([n]) => n)).toEqual(['b', 'c']);
  });

  it('answers OPENDIR ENOSYS only when the kernel offered FUSE_NO_OPENDIR_SUPPORT (it then stops sending it)', () => {
    const NO_OPENDIR_SUPPORT = 1 << 24;
    const opendir = (s: ReturnType<typeof newFs>) => header(s.dispatch(request(OP.OPENDIR, 1n, Buffer.alloc(8)))); // fuse_open_in
    const offered = initialized();
    expect(opendir(offered).error).toBe(ENOSYS);
    const older = newFs();
    expect(header(older.dispatch(request(OP.INIT, 0n, initBody(7, 45, 0xffffffff & ~NO_OPENDIR_SUPPORT)))).error).toBe(0);
    const r = opendir(older);
    expect(r.error).toBe(0);
    expect(r.len - 16).toBe(16); // fuse_open_out
  });

  it('INIT asks for FUSE_HANDLE_KILLPRIV_V2 unless the session turns it off', () => {
    const KILLPRIV_V2 = 1 << 28;
    const flagsOf = (opts: Record<string, unknown>) => {
      const s = new (loadCore().Session)({ mode: 'none', ...opts });
      return header(s.dispatch(request(OP.INIT, 0n, initBody()))).body.readUInt32LE(12); // fuse_init_out.flags
    };
    expect(flagsOf({}) & KILLPRIV_V2).not.toBe(0);
    expect(flagsOf({ killprivV2: false }) & KILLPRIV_V2).toBe(0);
  });

  it('every request that expects a reply gets exactly one, across a random byte fuzz', () => {
    const s = initialized();
    let rnd = 12345;
    const next = () => (rnd = (rnd * 1103515245 + 12345) & 0x7fffffff);
    for (let i = 0; i < 3000; i++) {
      const opcode = [1, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 17, 21, 22, 23, 24, 27, 28, 34, 35, 44, 45, 46, 47, 9999][next() % 26]!;
      const body = Buffer.alloc(next() % 120);
      for (let j = 0; j < body.length; j++) body[j] = next() & 0xff;
      const r = s.dispatch(request(opcode, BigInt(next() % 6), body));
      expect(r).not.toBeNull();
      expect(r!.readUInt32LE(0)).toBe(r!.length);
    }
    const c = s.counters();
    expect(c.unanswered).toBe(0);
    expect(c.exceptions).toBe(0);
    expect(c.badReplies).toBe(0); // every successful reply had its opcode's layout
  });

  it('successful replies have the size the opcode table gives their layout (entry 128, attr 104, CREATE 144, INIT 64)', () => {
    const s = newFs();
    const init = header(s.dispatch(request(OP.INIT, 0n, initBody())));
    expect(init.len - 16).toBe(64);
    const mk = header(s.dispatch(request(OP.MKDIR, 1n, mkdirBody('sz'))));
    expect(mk.len - 16).toBe(128); // fuse_entry_out
    const attr = header(s.dispatch(request(OP.GETATTR, mk.body.readBigUInt64LE(0), Buffer.alloc(16))));
    expect(attr.len - 16).toBe(104); // fuse_attr_out
    const create = Buffer.alloc(16); // fuse_create_in: flags, mode, umask, open_flags
    create.writeUInt32LE(0o100, 0); // O_CREAT
    create.writeUInt32LE(0o100644, 4);
    const cr = header(s.dispatch(request(OP.CREATE, 1n, Buffer.concat([create, cstr('f')]))));
    expect(cr.error).toBe(0);
    expect(cr.len - 16).toBe(144); // fuse_entry_out + fuse_open_out
    expect(s.counters().badReplies).toBe(0);
  });
});
