import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EphemeraError, errorCode, type AnyEphemeraError, errorMessage, exitCodeOf, formatError, isCode, isEphemeraError } from '../../errors/index';
import { reportError } from '../../cli/main';
import { LINK_ERROR_CODES, LinkError, isLinkError } from '../../link/errors';
import { EngineError } from '../../engine/errors';
import { ManagerError } from '../../manager/errors';
import { MemoryCgroupError } from '../../fusefs/memory/errors';
import { FusefsError } from '../../fusefs/errors';
import { DaemonError, errorReply } from '../../fusefs/daemon/errors';
import { VolumeError } from '../../node/volumes/errors';
import { PolicyError } from '../../policy/errors';
import { ControllerError } from '../../controller/errors';
import { BenchError } from '../../bench/errors';
import { ExecutionError } from '../../agent/executor';
import { CsiConfigError } from '../../node/csi/config';

const root = join(__dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'ephemera-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An ENOENT as Node makes it: the message already leads with the errno name. */
function enoent(): NodeJS.ErrnoException {
  try {
    readFileSync(join(dir, 'missing'));
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
  throw new Error('read of a missing file succeeded');
}

describe('EphemeraError', () => {
  it('carries code, details and cause, and a message without the code', () => {
    const cause = new Error('the kernel said no');
    const err = new EphemeraError('E_SOMETHING', 'cannot do it', { details: { path: '/x' }, cause, exitCode: 3 });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('EphemeraError');
    expect(err.code).toBe('E_SOMETHING');
    expect(err.details).toEqual({ path: '/x' });
    expect(err.cause).toBe(cause);
    expect(err.message).toBe('cannot do it');
    expect(err.exitCode).toBe(3);
    expect(exitCodeOf(err)).toBe(3);
  });

  it('has no own cause property when none is given', () => {
    const err = new EphemeraError('E_X', 'no cause');
    expect(Object.hasOwn(err, 'cause')).toBe(false);
    expect(err.details).toBeUndefined();
    expect(exitCodeOf(err)).toBe(1);
  });

  it("isCode narrows to a layer's list, isEphemeraError to any layer's error", () => {
    expect(isCode(LINK_ERROR_CODES, 'E_AUTH')).toBe(true);
    expect(isCode(LINK_ERROR_CODES, 'E_NO_DOCKER')).toBe(false);
    expect(isCode(LINK_ERROR_CODES, 7)).toBe(false);
    const link = new LinkError('E_AUTH', 'bad token');
    expect(isEphemeraError(link)).toBe(true);
    expect(isEphemeraError(link, 'E_AUTH')).toBe(true);
    expect(isEphemeraError(link, 'E_TOKEN')).toBe(false);
    expect(isLinkError(new EngineError('E_TIMEOUT', 'slow'))).toBe(false);
    expect(isEphemeraError(new Error('plain'))).toBe(false);
  });
});

describe("every layer's error", () => {
  const cause = new Error('underneath');
  const cases: Array<[string, AnyEphemeraError, string]> = [
    ['LinkError', new LinkError('E_TOKEN', 'reading the token', cause), 'E_TOKEN'],
    ['EngineError', new EngineError('E_TIMEOUT', 'ran too long', { ms: 5 }, cause), 'E_TIMEOUT'],
    ['ManagerError', new ManagerError('E_LIMIT_WRITE', 'write failed', { step: 1 }, cause), 'E_LIMIT_WRITE'],
    ['MemoryCgroupError', new MemoryCgroupError('E_CGROUP_IO', 'cannot read memory.limit', { errno: 'EACCES' }, cause), 'E_CGROUP_IO'],
    ['VolumeError', new VolumeError('E_BAD_OPTION', 'unknown option', cause), 'E_BAD_OPTION'],
    ['FusefsError', new FusefsError('E_NO_MOUNTPOINT', 'no such directory'), 'E_NO_MOUNTPOINT'],
    ['DaemonError', new DaemonError('E_UNKNOWN_MOUNT', 'no mount m1'), 'E_UNKNOWN_MOUNT'],
    ['PolicyError', new PolicyError('E_BAD_CONFIG', 'bad config', [{ path: 'a', reason: 'b' }]), 'E_BAD_CONFIG'],
    ['ControllerError', new ControllerError('E_NOT_FOUND', 'no function f'), 'E_NOT_FOUND'],
    ['BenchError', new BenchError('E_FIO', 'fio failed', { cause }), 'E_FIO'],
    ['ExecutionError', new ExecutionError('E_EXECUTION', 'could not run', cause), 'E_EXECUTION'],
    ['CsiConfigError', new CsiConfigError('CSI config: nodeId: required'), 'E_BAD_CONFIG'],
  ];
  it.each(cases)('%s is an EphemeraError with its name and code, its message without the code', (name, err, code) => {
    expect(err).toBeInstanceOf(EphemeraError);
    expect(err.name).toBe(name);
    expect(err.code).toBe(code);
    expect(err.message).not.toMatch(/^E_[A-Z_]+:/);
    expect(formatError(err)).toBe(`${code}: ${err.message}`);
    expect(formatError(err).match(/E_[A-Z_]+/g)).toEqual([code]);
  });

  it('keeps the causes and details given positionally', () => {
    expect(new LinkError('E_TOKEN', 'x', cause).cause).toBe(cause);
    expect(new EngineError('E_TIMEOUT', 'x', { ms: 5 }, cause)).toMatchObject({ details: { ms: 5 }, cause });
    expect(new ManagerError('E_LIMIT_WRITE', 'x', undefined, cause).cause).toBe(cause);
    expect(new PolicyError('E_BAD_CONFIG', 'x', [{ path: 'a', reason: 'b' }]).details).toEqual([{ path: 'a', reason: 'b' }]);
  });

  it('keeps the exit statuses the CLI uses', () => {
    expect(exitCodeOf(new PolicyError('E_BAD_ARGS', 'x'))).toBe(2);
    expect(exitCodeOf(new ControllerError('E_BAD_ARGS', 'x'))).toBe(2);
    expect(exitCodeOf(new FusefsError('E_NOT_ROOT', 'x', 77))).toBe(77);
    expect(exitCodeOf(new BenchError('E_INTERRUPTED', 'x'))).toBe(130);
    expect(exitCodeOf(new BenchError('E_FIO', 'x'))).toBe(1);
    expect(exitCodeOf(new LinkError('E_AUTH', 'x'))).toBe(1);
  });

  it('keeps the JSON shapes: controller answers and daemon error replies', () => {
    const issues = [{ path: 'body.name', reason: 'required' }];
    expect(JSON.parse(JSON.stringify(new ControllerError('E_BAD_REQUEST', 'bad body', issues)))).toEqual({ code: 'E_BAD_REQUEST', message: 'bad body', issues });
    expect(JSON.parse(JSON.stringify(new ControllerError('E_NOT_FOUND', 'no f')))).toEqual({ code: 'E_NOT_FOUND', message: 'no f' });
    expect(new ControllerError('E_BAD_REQUEST', 'bad body', issues).issues).toEqual(issues);
    expect(errorReply(new DaemonError('E_UNKNOWN_MOUNT', 'no mount m1'), 4)).toEqual({ ok: false, seq: 4, code: 'E_UNKNOWN_MOUNT', message: 'no mount m1' });
    expect(errorReply(new MemoryCgroupError('E_NO_CGROUP', 'gone'))).toEqual({ ok: false, code: 'E_NO_CGROUP', message: 'gone' });
    expect(errorReply(enoent())).toMatchObject({ ok: false, code: 'E_DAEMON', message: expect.stringMatching(/^ENOENT: /) });
  });
});

describe('formatError and errorCode', () => {
  it("does not repeat the errno name Node's system errors lead with", () => {
    const e = enoent();
    expect(formatError(e)).toBe(e.message);
    expect(formatError(e).match(/ENOENT/g)).toHaveLength(1);
    expect(errorCode(e)).toBeUndefined();
  });

  it('prefixes a foreign code once and leaves code-less errors as they are', () => {
    const native = Object.assign(new Error('mount failed: permission denied'), { code: 'E_MOUNT' });
    expect(formatError(native)).toBe('E_MOUNT: mount failed: permission denied');
    expect(errorCode(native)).toBe('E_MOUNT');
    expect(formatError(new Error('plain'))).toBe('plain');
    expect(formatError('a string')).toBe('a string');
    expect(errorMessage(42)).toBe('42');
  });
});

describe('the CLI prints each code once', () => {
  it('reportError writes `ephemera: CODE: message` and returns the exit status', () => {
    let written = '';
    const status = reportError(new PolicyError('E_BAD_TRACE', 'trace line 3: too few fields'), { write: (s: string) => ((written += s), true) });
    expect(written).toBe('ephemera: E_BAD_TRACE: trace line 3: too few fields\n');
    expect(status).toBe(2);
  });

  it('a real command: the code appears exactly once on stderr', () => {
    expect(existsSync(join(root, 'dist', 'cli', 'main.js')), 'dist/ not built: run `npm run build:ts` (npm test does)').toBe(true);
    const run = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin', 'ephemera.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
    const mount = run('mount', '--size', '64Q', dir);
    expect(mount.status).toBe(1);
    expect(mount.stderr).toBe('ephemera: E_BAD_OPTION: --size: "64Q" is not a size (e.g. 64M, 1G, 4096)\n');
    // A link error wrapped by `manager status` (no token for the tenant): it used to print E_TOKEN twice.
    mkdirSync(join(dir, 'state', 'managers'), { recursive: true });
    const status = run('manager', 'status', '--tenant', 'acme', '--state-dir', join(dir, 'state'));
    expect(status.status).toBe(2);
    expect(status.stderr).toMatch(/^E_TOKEN: tenant acme: reading the token of tenant acme: /);
    expect(status.stderr.match(/E_TOKEN/g)).toHaveLength(1);
  });
});
