import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_RECIPE, Engine, EngineError, PlainDirTmpProvider, type FunctionContainer } from '../../engine/index';
import { ensureDocker, testRunLabels } from '../support/docker';

const docker = await ensureDocker();
const labels = testRunLabels('bad-input');

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof EngineError) return err.code;
    throw err;
  }
  return 'resolved';
}

describe.skipIf(docker.skipReason !== undefined)('engine bad input: clear errors, nothing left behind', () => {
  let engine: Engine;
  let provider: PlainDirTmpProvider;
  let parentDir: string;
  let image: string;

  beforeAll(async () => {
    parentDir = await mkdtemp(path.join(os.tmpdir(), 'eph-engine-bad-'));
    provider = await PlainDirTmpProvider.open(parentDir);
    engine = await Engine.connect({ tmpProvider: provider });
    image = (await engine.ensureImage(BUSYBOX_RECIPE)).tag;
  }, 60_000);

  afterAll(async () => {
    if (engine) await engine.removeManaged(labels);
    if (provider) await provider.close();
    if (parentDir) await rm(parentDir, { recursive: true, force: true });
  });

  const spec = () => ({ image, command: ['/bin/sh', '-c'], memoryMiB: 32, tmp: { kind: 'bind' as const }, user: 'fn', labels });

  it('no daemon on the socket → E_NO_DOCKER', async () => {
    expect(await codeOf(Engine.connect({ socketPath: path.join(parentDir, 'no-such.sock') }))).toBe('E_NO_DOCKER');
  });

  it('invalid spec → E_BAD_SPEC naming the field', async () => {
    const err = await engine.start({ ...spec(), memoryMiB: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('E_BAD_SPEC');
    expect((err as EngineError).message).toMatch(/memoryMiB/);
  });

  it('unknown image → E_NO_IMAGE, no container and no /tmp directory left', async () => {
    expect(await codeOf(engine.start({ ...spec(), image: 'ephemera/no-such-image:0' }))).toBe('E_NO_IMAGE');
    expect(await engine.listManaged(labels)).toEqual([]);
    expect(await readdir(parentDir)).toEqual([]);
  });

  it('a bind /tmp on a private mount → E_BAD_SPEC (rslave needs a shared parent), nothing left', async () => {
    const privateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-engine-private-'));
    let mounted = false;
    try {
      expect(spawnSync('mount', ['--bind', privateDir, privateDir]).status).toBe(0);
      mounted = true;
      expect(spawnSync('mount', ['--make-private', privateDir]).status).toBe(0);
      const source = path.join(privateDir, 'tmp');
      await mkdir(source);
      expect(await codeOf(engine.start({ ...spec(), tmp: { kind: 'bind', hostPath: source } }))).toBe('E_BAD_SPEC');
      expect(await engine.listManaged(labels)).toEqual([]);
    } finally {
      if (mounted) spawnSync('umount', [privateDir]);
      await rm(privateDir, { recursive: true, force: true });
    }
  });

  it('a command that does not exist → E_NO_COMMAND; the container still serves', async () => {
    const fc = await engine.start({ ...spec(), command: ['/no/such/binary'] });
    try {
      expect(await codeOf(fc.invoke())).toBe('E_NO_COMMAND');
      expect((await fc.exec(['echo', 'alive'])).stdout).toBe('alive\n');
    } finally {
      await fc.remove();
    }
    expect(await fc.leftovers()).toEqual([]);
  });

  it('a timeout → E_TIMEOUT, kills the invocation tree but not the container', async () => {
    const fc = await engine.start(spec());
    try {
      const t0 = performance.now();
      const err = await fc.invoke(['echo started; sleep 31 & sleep 32; echo never'], { timeoutMs: 1000 }).catch((e: unknown) => e);
      const elapsed = performance.now() - t0;
      expect((err as EngineError).code).toBe('E_TIMEOUT');
      expect(((err as EngineError).details?.result as { stdout: string }).stdout).toBe('started\n');
      expect(elapsed).toBeLessThan(5000);
      expect(await fc.isRunning()).toBe(true);
      const ps = await fc.invoke(['ps -o args']);
      expect(ps.stdout).not.toMatch(/sleep 3[12]/);
    } finally {
      await fc.remove();
    }
    expect(await fc.leftovers()).toEqual([]);
  });

  it('the container dying mid-invocation → E_CONTAINER_DIED, then removal leaves nothing', async () => {
    const fc: FunctionContainer = await engine.start(spec());
    const hostTmp = fc.hostTmpPath!;
    try {
      const pending = codeOf(fc.invoke(['sleep 30'], { timeoutMs: 20_000 }));
      await new Promise((r) => setTimeout(r, 500));
      await fc.container.kill();
      expect(await pending).toBe('E_CONTAINER_DIED');
      expect(await codeOf(fc.invoke(['true']))).toBe('E_CONTAINER_DIED');
    } finally {
      await fc.remove();
    }
    expect(await fc.leftovers()).toEqual([]);
    expect(existsSync(hostTmp)).toBe(false);
    expect(await codeOf(fc.invoke(['true']))).toBe('E_REMOVED');
    expect(await engine.listManaged(labels)).toEqual([]);
  });
});
