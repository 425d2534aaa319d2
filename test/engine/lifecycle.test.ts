import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BUSYBOX_RECIPE, Engine, FUNCTION_RECIPE, PlainDirTmpProvider, type FunctionContainer, type TmpMode } from '../../engine/index';
import { ensureDocker, testRunLabels } from '../support/docker';

const docker = await ensureDocker();
const labels = testRunLabels('lifecycle');

describe.skipIf(docker.skipReason !== undefined)('engine lifecycle (real dockerd)', () => {
  let engine: Engine;
  let provider: PlainDirTmpProvider;
  let parentDir: string;
  const images: Record<string, string> = {};

  beforeAll(async () => {
    parentDir = await mkdtemp(path.join(os.tmpdir(), 'eph-engine-tmp-'));
    provider = await PlainDirTmpProvider.open(parentDir);
    engine = await Engine.connect({ tmpProvider: provider });
    for (const recipe of [BUSYBOX_RECIPE, FUNCTION_RECIPE]) {
      const res = await engine.ensureImage(recipe);
      images[recipe.name] = res.tag;
      console.log(`${res.tag}: ${res.built ? `built in ${(res.buildMs / 1000).toFixed(1)} s` : 'reused'}`);
    }
  }, 240_000);

  afterAll(async () => {
    if (engine) await engine.removeManaged(labels);
    if (provider) await provider.close();
    if (parentDir) await rm(parentDir, { recursive: true, force: true });
  });

  const modes: Array<[string, TmpMode, RegExp | null]> = [
    ['overlay', { kind: 'overlay' }, null],
    ['tmpfs', { kind: 'tmpfs', sizeBytes: 64 * 1024 * 1024 }, /^tmpfs \/tmp tmpfs .*size=65536k/m],
    ['bind (provider)', { kind: 'bind' }, /^\S+ \/tmp \S+ /m],
  ];

  for (const imageName of ['busybox', 'function']) {
    for (const [modeName, tmp, mountLine] of modes) {
      it(`${imageName} image, ${modeName} /tmp: mount, non-root files, warm persistence, clean removal`, async () => {
        const fc = await engine.start({
          image: images[imageName]!,
          command: ['/bin/sh', '-c'],
          memoryMiB: 64,
          tmp,
          user: 'fn',
          tenant: 't1',
          function: `life-${imageName}`,
          workflow: 'wf',
          labels,
        });
        let removed = false;
        try {
          console.log(`${imageName}/${modeName}: ready in ${fc.timings.readyMs} ms (create ${fc.timings.createMs} ms, start ${fc.timings.startMs} ms)`);
          const mounts = (await fc.invoke(['cat /proc/mounts'])).stdout;
          const tmpLines = mounts.split('\n').filter((l) => l.split(' ')[1] === '/tmp');
          if (mountLine === null) expect(tmpLines).toEqual([]);
          else expect(tmpLines.join('\n')).toMatch(mountLine);

          const who = await fc.invoke(['id -u; grep CapEff /proc/self/status']);
          expect(who.exitCode).toBe(0);
          expect(who.stdout).toMatch(/^1000\n/);
          expect(who.stdout).toMatch(/CapEff:\s+0+\n/);

          const write = await fc.invoke(['mkdir /tmp/d && echo payload > /tmp/d/f && cat /tmp/d/f']);
          expect(write).toMatchObject({ exitCode: 0, stdout: 'payload\n', oomKills: 0 });
          const again = await fc.invoke(['cat /tmp/d/f && rm /tmp/d/f && rmdir /tmp/d && ls -A /tmp | wc -l']);
          expect(again.exitCode).toBe(0);
          expect(again.stdout.split('\n')[0]).toBe('payload');
          expect(Number(again.stdout.split('\n')[1])).toBe(0);

          const inspected = await fc.container.inspect();
          expect(inspected.HostConfig.Memory).toBe(64 * 1024 * 1024);
          expect(inspected.HostConfig.MemorySwap).toBe(64 * 1024 * 1024);
          expect(inspected.HostConfig.Privileged).toBe(false);
          expect(inspected.Config.Labels).toMatchObject({
            'ephemera.tenant': 't1',
            'ephemera.function': `life-${imageName}`,
            'ephemera.workflow': 'wf',
            'ephemera.managed': '1',
          });
          const limit = Number(await readFile(path.join(fc.cgroupPath, 'memory.limit_in_bytes'), 'utf8'));
          expect(limit).toBe(64 * 1024 * 1024);
          if (tmp.kind === 'bind') {
            expect(provider.attached.get(fc.name)).toBe(fc.cgroupPath);
            expect(fc.hostTmpPath && existsSync(fc.hostTmpPath)).toBe(true);
          }

          const hostTmp = fc.hostTmpPath;
          await fc.remove();
          removed = true;
          expect(await fc.leftovers()).toEqual([]);
          if (hostTmp) expect(existsSync(hostTmp)).toBe(false);
          expect(await engine.listManaged({ ...labels, 'ephemera.function': `life-${imageName}` })).toEqual([]);
        } finally {
          if (!removed) await fc.remove();
        }
      });
    }
  }

  it('rslave: a mount made under the bind source after start is visible inside the container', async () => {
    const fc = await engine.start({ image: images.busybox!, command: ['/bin/sh', '-c'], memoryMiB: 32, tmp: { kind: 'bind' }, labels });
    const sub = path.join(fc.hostTmpPath!, 'late');
    let mounted = false;
    try {
      await mkdir(sub);
      expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'late-mount', sub]).status).toBe(0);
      mounted = true;
      const res = await fc.invoke(['grep " /tmp/late " /proc/mounts']);
      expect(res.stdout).toMatch(/^late-mount \/tmp\/late tmpfs/);
    } finally {
      if (mounted) spawnSync('umount', [sub]);
      await fc.remove();
    }
    expect(await fc.leftovers()).toEqual([]);
  });

  it('cold invocations start with an empty /tmp; warm ones keep it', async () => {
    const spec = { image: images.busybox!, command: ['/bin/sh', '-c'], memoryMiB: 32, tmp: { kind: 'bind' as const }, user: 'fn', labels };
    const first = await engine.invokeCold(spec, ['ls -A /tmp | wc -l; echo x > /tmp/mark']);
    const second = await engine.invokeCold(spec, ['ls -A /tmp | wc -l']);
    expect(Number(first.stdout.trim().split('\n')[0])).toBe(0);
    expect(Number(second.stdout.trim())).toBe(0);
    console.log(`cold start (busybox, bind): ${first.timings.readyMs} ms, ${second.timings.readyMs} ms`);
    const warm = await engine.start(spec);
    try {
      await warm.invoke(['echo x > /tmp/mark']);
      expect((await warm.invoke(['cat /tmp/mark'])).stdout).toBe('x\n');
    } finally {
      await warm.remove();
    }
    expect(await engine.listManaged(labels)).toEqual([]);
  });
});
