// Where options and errors cross between JavaScript and the native core, without a mount (no root):
// a wrong type or out-of-range option is refused, naming the option and the value (it used to take
// the default: `sizeQuota: "64M"` meant unlimited), and every errno comes out by its own name from
// one table (a move's EINPROGRESS used to come out as "EIO").
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkMountOptions, EphemeraMount } from '../../fusefs/mount';
import { loadCore, type NativeSessionOptions } from '../../fusefs/native';

const core = loadCore();

function refusal(fn: () => unknown): { name: string; code: unknown; option: unknown; message: string } {
  try {
    fn();
  } catch (e) {
    const err = e as Error & { code?: unknown; option?: unknown };
    return { name: err.name, code: err.code, option: err.option, message: err.message };
  }
  throw new Error('expected a refusal');
}

describe('native Session options', () => {
  // Each: an option with a value of the wrong type or out of range, and what the message must name.
  const bad: Array<[string, unknown, string]> = [
    ['sizeQuota', '64M', 'the string "64M"'],
    ['sizeQuota', -1, 'the number -1'],
    ['sizeQuota', 1.5, 'the number 1.5'],
    ['inodeQuota', Number.NaN, 'the number NaN'],
    ['inodeQuota', 2 ** 60, 'the number'],
    ['queues', 0, 'the number 0'],
    ['queues', 17, 'the number 17'],
    ['queues', '2', 'the string "2"'],
    ['uringDepth', 65, 'the number 65'],
    ['rootMode', 0o40777, 'the number'],
    ['rootUid', -1, 'the number -1'],
    ['rootGid', null, 'null'],
    ['entryTimeout', -1, 'the number -1'],
    ['attrTimeout', Number.POSITIVE_INFINITY, 'the number Infinity'],
    ['xattrs', 'yes', 'the string "yes"'],
    ['allowOther', 1, 'the number 1'],
    ['killprivV2', 'false', 'the string "false"'],
    ['flushEnosys', 0, 'the number 0'],
    ['memoryTierSized', 'true', 'the string "true"'],
    ['diskTierSized', {}, 'an object'],
    ['mode', 'passthru', 'the string "passthru"'],
    ['mode', 1, 'the number 1'],
    ['transport', 'io_uring', 'the string "io_uring"'],
    ['mountpoint', 42, 'the number 42'],
    ['spillDir', ['/x'], 'an array'],
    ['memoryDir', 'a\0b', 'the string'],
    ['journal', true, 'the boolean true'],
    ['adoptStore', 7, 'the number 7'],
  ];
  it.each(bad)('refuses %s = %j with E_BAD_OPTION naming it and the value', (key, value, shown) => {
    const r = refusal(() => new core.Session({ mode: 'none', [key]: value } as NativeSessionOptions));
    expect(r.code).toBe('E_BAD_OPTION');
    expect(r.option).toBe(key);
    expect(['TypeError', 'RangeError']).toContain(r.name);
    expect(r.message).toContain(`option ${key} must be`);
    expect(r.message).toContain(shown);
  });

  it('refuses an unknown option name, and options that are not an object', () => {
    const r = refusal(() => new core.Session({ mode: 'none', sizeQuta: 1 } as NativeSessionOptions));
    expect(r).toMatchObject({ code: 'E_BAD_OPTION', option: 'sizeQuta', name: 'TypeError' });
    expect(refusal(() => new core.Session('mode=none' as unknown as NativeSessionOptions)).code).toBe('E_BAD_OPTION');
  });

  it('takes every option of the right type, and undefined as absent', () => {
    const s = new core.Session({
      mode: 'none', rootMode: 0o755, rootUid: 1000, rootGid: 1000, entryTimeout: 0, attrTimeout: 0.5, flushEnosys: false,
      xattrs: true, killprivV2: false, sizeQuota: 64 << 20, inodeQuota: 1000, memoryDir: '', journal: '', adoptStore: '',
      memoryTierSized: false, diskTierSized: false, mountpoint: '', queues: 16, allowOther: true, transport: 'device', uringDepth: 64,
      ...{ spillDir: undefined },
    });
    expect(s.usage().sizeQuota).toBe(64 << 20);
    expect(s.usage().inodeQuota).toBe(1000);
  });

  it('setPlacement, setQuotas and setChargeAgent refuse wrong types too', () => {
    const s = new core.Session({ mode: 'none' });
    expect(refusal(() => s.setPlacement({ memoryBudget: '1G' as unknown as number })).option).toBe('memoryBudget');
    expect(refusal(() => s.setPlacement({ memoryBudget: -1 })).name).toBe('RangeError');
    expect(refusal(() => s.setPlacement({ newFileRoom: 'no' as unknown as number })).option).toBe('newFileRoom');
    expect(refusal(() => s.setPlacement({ memoryBudget: 1, budget: 2 } as never)).option).toBe('budget');
    s.setPlacement({ memoryBudget: Number.POSITIVE_INFINITY, reservePerOpenFile: 1.1 * 4096, newFileRoom: 0 });
    expect(refusal(() => s.setQuotas('64M' as unknown as number, 0)).code).toBe('E_BAD_OPTION');
    expect(refusal(() => s.setQuotas(-1, 0)).code).toBe('E_BAD_OPTION');
    s.setQuotas(1 << 20, 10);
    expect(s.usage().sizeQuota).toBe(1 << 20);
    expect(refusal(() => s.setChargeAgent({ helper: 1, cgroupDir: '' } as never)).option).toBe('helper');
  });
});

describe('native positional arguments', () => {
  // Each: a call with a wrong argument, the argument the refusal must name, and the value shown.
  // Before, a non-number inode became 0 (or NaN → 0), a timeout of "5s" silently took the default,
  // and a tier error named nothing but the tier.
  const s = new core.Session({ mode: 'none' });
  const cases: Array<[string, () => unknown, string, string]> = [
    ['beginMove ino as a string', () => s.beginMove('12' as unknown as number, 'disk'), 'ino', 'the string "12"'],
    ['beginMove ino 0', () => s.beginMove(0, 'disk'), 'ino', 'the number 0'],
    ['beginMove ino 1.5', () => s.beginMove(1.5, 'disk'), 'ino', 'the number 1.5'],
    ['beginMove tier', () => s.beginMove(1, 'ssd' as never), 'tier', 'the string "ssd"'],
    ['beginMove without tier', () => s.beginMove(1, undefined as never), 'tier', 'a value of another type'],
    ['moveNow ino NaN', () => s.moveNow(Number.NaN, 'memory'), 'ino', 'the number NaN'],
    ['commitMove token', () => s.commitMove('1' as unknown as number), 'token', 'the string "1"'],
    ['abortMove token', () => s.abortMove(-1), 'token', 'the number -1'],
    ['handOver timeout', () => s.handOver('5s' as unknown as number), 'timeoutMs', 'the string "5s"'],
    ['handOver timeout too long', () => s.handOver(3_600_000), 'timeoutMs', 'the number 3600000'],
    ['holderTake timeout', () => core.holderTake('/nonexistent/holder.sock', '5s' as unknown as number), 'timeoutMs', 'the string "5s"'],
    ['setOnClose', () => s.setOnClose('cb' as never), 'cb', 'the string "cb"'],
    ['setQuotas inodes', () => s.setQuotas(0, '10' as unknown as number), 'inodes', 'the string "10"'],
    ['mount onStopped', () => s.mount(42 as never), 'onStopped', 'the number 42'],
  ];
  it.each(cases)('refuses %s with E_BAD_OPTION naming the argument', (_what, call, name, shown) => {
    const r = refusal(call);
    expect(r.code).toBe('E_BAD_OPTION');
    expect(r.option).toBe(name);
    expect(['TypeError', 'RangeError']).toContain(r.name);
    expect(r.message).toMatch(new RegExp(`^\\w+ argument ${name} must be `));
    expect(r.message).toContain(shown);
  });

  it('takes absent optional arguments as their defaults', () => {
    expect(core.holderTake('/nonexistent/holder.sock', undefined as unknown as number)).toBeNull();
    // No holder keeps this session's connection: refused for that reason, not for the argument.
    expect(refusal(() => s.handOver()).code).toBe('E_HANDOVER');
    s.setOnClose(null);
    expect(s.commitMove(1)).toBe(os.constants.errno.ENOENT); // no such move: an errno, not an argument error
  });
});

describe('EphemeraMount.open options (checked before anything is made)', () => {
  it.each([
    [{ mountpoint: '/x', sizeQuota: '64M' }, 'sizeQuota', '"64M"'],
    [{ mountpoint: '/x', sizeQuota: -5 }, 'sizeQuota', '-5'],
    [{ mountpoint: '/x', queues: 40 }, 'queues', '40'],
    [{ mountpoint: '/x', mode: 'passthru' }, 'mode', '"passthru"'],
    [{ mountpoint: '/x', transport: 'ring' }, 'transport', '"ring"'],
    [{ mountpoint: '/x', xattrs: 'true' }, 'xattrs', '"true"'],
    [{ mountpoint: '/x', restart: { holderTimeoutS: '30' } }, 'restart.holderTimeoutS', '"30"'],
    [{ mountpoint: 7 }, 'mountpoint', '7'],
  ])('refuses %j with E_BAD_OPTION naming %s', async (opts, name, shown) => {
    expect(() => checkMountOptions(opts)).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION', message: expect.stringContaining(`option ${name}:`) }));
    expect(() => checkMountOptions(opts)).toThrow(shown);
    await expect(EphemeraMount.open(opts as never)).rejects.toMatchObject({ code: 'E_BAD_OPTION' });
  });

  it('refuses an unknown option name', () => {
    expect(() => checkMountOptions({ mountpoint: '/x', sizeQuta: 1 })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION', message: 'mount: unknown option sizeQuta' }));
  });

  it('takes what the callers pass', () => {
    expect(() =>
      checkMountOptions({ mountpoint: '/x', allowOther: true, queues: 2, mode: 'auto', sharedMemoryDir: '/m', spillDir: '', sizeQuota: 0, inodeQuota: 0,
        memoryTierSized: true, diskTierSized: false, rootMode: 0o1777, rootUid: 0, rootGid: 0, xattrs: false, killprivV2: true, transport: 'device',
        restart: { holderTimeoutS: 30 } }),
    ).not.toThrow();
  });
});

describe('one errno table', () => {
  // Node's aliases (one number, two names): the native table gives libuv's name.
  const alias: Record<string, string> = { EWOULDBLOCK: 'EAGAIN', EOPNOTSUPP: 'ENOTSUP', EDEADLOCK: 'EDEADLK' };

  it('names every errno Node knows as Node does', () => {
    for (const [name, value] of Object.entries(os.constants.errno)) expect([name, value, core.errnoName(value)]).toEqual([name, value, alias[name] ?? name]);
  });

  it('names every number Linux defines (1..133 but 41 and 58), and no other', () => {
    for (let n = 1; n <= 133; n++) {
      if (n === 41 || n === 58) expect(core.errnoName(n)).toBeNull();
      else expect(core.errnoName(n)).toMatch(/^E[A-Z0-9]+$/);
    }
    expect(core.errnoName(0)).toBeNull();
    expect(core.errnoName(134)).toBeNull();
    expect(core.errnoName(115)).toBe('EINPROGRESS');
    expect(core.errnoName(117)).toBe('EUCLEAN');
  });
});

describe('a tier move reports its errno by name', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  let unique = 1n;
  function request(opcode: number, nodeid: bigint, body: Buffer): Buffer {
    const h = Buffer.alloc(40); // fuse_in_header
    h.writeUInt32LE(40 + body.length, 0); // len
    h.writeUInt32LE(opcode, 4); //           opcode
    h.writeBigUInt64LE(unique++, 8); //      unique
    h.writeBigUInt64LE(nodeid, 16); //       nodeid
    return Buffer.concat([h, body]);
  }
  function errorOf(reply: Buffer | null): number {
    return Math.abs(reply!.readInt32LE(4));
  }

  it('EINPROGRESS while another move of the file runs, not EIO', async () => {
    const spill = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-boundary-'));
    dirs.push(spill);
    const session = newSession(spill);
    const init = Buffer.alloc(64); // fuse_init_in: major, minor, max_readahead, flags, flags2
    init.writeUInt32LE(7, 0);
    init.writeUInt32LE(45, 4);
    init.writeUInt32LE(128 << 10, 8);
    expect(errorOf(session.dispatch(request(26, 0n, init)))).toBe(0);
    const create = Buffer.alloc(16); // fuse_create_in: flags, mode, umask, open_flags
    create.writeUInt32LE(fs.constants.O_RDWR, 0);
    create.writeUInt32LE(0o100644, 4);
    const created = session.dispatch(request(35, 1n, Buffer.concat([create, Buffer.from('f\0')])))!;
    expect(errorOf(created)).toBe(0);
    const ino = Number(created.readBigUInt64LE(16)); // fuse_entry_out.nodeid
    const release = Buffer.alloc(24); // fuse_release_in: fh, flags, release_flags, lock_owner
    expect(errorOf(session.dispatch(request(18, BigInt(ino), release)))).toBe(0);

    const ticket = session.beginMove(ino, 'disk');
    try {
      const second = await session.moveNow(ino, 'disk');
      expect(second).toMatchObject({ errno: os.constants.errno.EINPROGRESS, code: 'EINPROGRESS' });
      expect(refusal(() => session.beginMove(ino, 'disk'))).toMatchObject({ code: 'EINPROGRESS' });
    } finally {
      session.abortMove(ticket.token);
    }
    expect(await session.moveNow(ino, 'memory')).toMatchObject({ code: 'EALREADY' });
    expect(refusal(() => session.beginMove(999, 'disk'))).toMatchObject({ code: 'ENOENT' });
  });

  function newSession(spill: string) {
    return new core.Session({ mode: 'none', spillDir: spill });
  }
});
