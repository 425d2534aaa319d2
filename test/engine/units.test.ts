import { describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { containerIdOfCgroup } from '../../engine/cgroup';
import { detectDebianMirror, findMemoryMount, memoryCgroupOfPid, recipeHash, FUNCTION_RECIPE, parseFunctionSpec, largestFileUnder } from '../../engine/index';

describe('engine pure parts', () => {
  it('finds the apt mirror in deb822 and one-line sources, skipping security and disabled stanzas', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-apt-'));
    try {
      await mkdir(path.join(dir, 'sources.list.d'));
      await writeFile(
        path.join(dir, 'sources.list.d', 'a.sources'),
        'Types: deb\nURIs: http://mirror.invalid/off\nSuites: bookworm\nEnabled: no\n\n' +
          'Types: deb\nURIs: http://mirror.invalid/security\nSuites: bookworm-security\n\n' +
          'Types: deb deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n',
      );
      expect(detectDebianMirror('bookworm', dir)).toBe('http://mirror.invalid/debian');
      await writeFile(path.join(dir, 'sources.list'), '# deb http://commented.invalid bookworm main\ndeb [arch=amd64] http://one.invalid/debian bookworm main\n');
      expect(detectDebianMirror('bookworm', dir)).toBe('http://one.invalid/debian');
      expect(detectDebianMirror('trixie', dir)).toBe('http://deb.debian.org/debian');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the recipe hash changes with the recipe and not with package order', () => {
    const reordered = { ...FUNCTION_RECIPE, packages: [...FUNCTION_RECIPE.packages].reverse() };
    expect(recipeHash(reordered)).toBe(recipeHash(FUNCTION_RECIPE));
    expect(recipeHash({ ...FUNCTION_RECIPE, packages: [...FUNCTION_RECIPE.packages, 'sqlite3'] })).not.toBe(recipeHash(FUNCTION_RECIPE));
  });

  it('resolves our own memory cgroup from /proc/self/cgroup and the mountinfo', async () => {
    const mount = await findMemoryMount().catch(() => undefined);
    if (!mount) {
      console.warn('*** no cgroup v1 memory hierarchy: skipping the cgroup path check ***');
      return;
    }
    const mine = await memoryCgroupOfPid(process.pid, mount);
    expect(mine.startsWith(mount.mountPoint)).toBe(true);
    const tasks = await import('node:fs/promises').then((fs) => fs.readFile(path.join(mine, 'cgroup.procs'), 'utf8'));
    expect(tasks.split('\n')).toContain(String(process.pid));
  });

  it('rejects bad specs with the field named', () => {
    expect(() => parseFunctionSpec({ image: '', command: [], memoryMiB: 1 })).toThrow(
      expect.objectContaining({ code: 'E_BAD_SPEC', message: expect.stringMatching(/^(?!E_).*image.*command.*memoryMiB/s) }),
    );
    expect(() => parseFunctionSpec({ image: 'x', command: ['y'], memoryMiB: 64, tmp: { kind: 'bind', hostPath: 'rel' } as never })).toThrow(/tmp\.hostPath/);
  });

  it('finds the largest regular file under a tree, ignoring symlinks', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'eph-largest-'));
    try {
      await mkdir(path.join(dir, 'a/b'), { recursive: true });
      await writeFile(path.join(dir, 'a/b/big'), Buffer.alloc(3000));
      await writeFile(path.join(dir, 'small'), Buffer.alloc(10));
      expect(await largestFileUnder(dir)).toBe(3000);
      expect(await largestFileUnder(path.join(dir, 'missing'))).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('containerIdOfCgroup', () => {
  const id = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + 'b'.repeat(4);
  it('reads the id under the cgroupfs and the systemd drivers, nothing else', () => {
    expect(containerIdOfCgroup(`/sys/fs/cgroup/memory/docker/${id}`)).toBe(id);
    expect(containerIdOfCgroup(`/sys/fs/cgroup/memory/system.slice/docker-${id}.scope`)).toBe(id);
    expect(containerIdOfCgroup('/sys/fs/cgroup/memory/user.slice')).toBeUndefined();
    expect(containerIdOfCgroup(`/sys/fs/cgroup/memory/docker/${id.slice(1)}`)).toBeUndefined();
  });
});
