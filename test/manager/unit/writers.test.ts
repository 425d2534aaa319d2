// The limit writers' contracts and the manager's labels and socket paths, without Docker: the
// Docker writer is given an object shaped as dockerode's, failing as dockerd does.
import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { DockerLimitWriter, InMemoryLimitWriter, isManagerError, managerLabels, parseManagerLabels } from '../../../manager/index';
import { managerSocketPath } from '../../../link/index';
import { MiB } from './fixture';

describe('InMemoryLimitWriter', () => {
  it('refuses, like cgroup v1, a limit below the usage it was told about, and an unknown container on read', async () => {
    const w = new InMemoryLimitWriter();
    w.usage.set('c', 10 * MiB);
    await expect(w.write('c', 8 * MiB)).rejects.toMatchObject({ code: 'E_LIMIT_WRITE', details: { containerId: 'c', limitBytes: 8 * MiB } });
    await w.write('c', 10 * MiB);
    expect(await w.read('c')).toBe(10 * MiB);
    expect(w.writes).toBe(1);
    await expect(w.read('nope')).rejects.toMatchObject({ code: 'E_UNKNOWN_CONTAINER' });
  });
});

describe('DockerLimitWriter (errors as dockerd gives them)', () => {
  function dockerWith(container: { update?: () => Promise<unknown>; inspect?: () => Promise<unknown> }): Docker {
    return { getContainer: () => container } as unknown as Docker;
  }

  it('a refused update (500: below usage on v1) is E_LIMIT_WRITE with the status and the cause', async () => {
    const cause = Object.assign(new Error('HTTP 500'), { statusCode: 500, json: { message: 'Cannot update container: memory limit below usage' } });
    const w = new DockerLimitWriter(dockerWith({ update: () => Promise.reject(cause) }));
    const err = await w.write('0123456789abcdef', 64 * MiB).catch((e: unknown) => e);
    expect(isManagerError(err, 'E_LIMIT_WRITE')).toBe(true);
    expect(err).toMatchObject({ details: { status: 500, containerId: '0123456789abcdef', limitBytes: 64 * MiB }, cause });
    expect((err as Error).message).toContain('memory limit below usage');
  });

  it('a container Docker does not know, or one not running, is E_UNKNOWN_CONTAINER on read and raiseNow', async () => {
    const gone = new DockerLimitWriter(dockerWith({ inspect: () => Promise.reject(new Error('no such container')) }));
    await expect(gone.read('c')).rejects.toMatchObject({ code: 'E_UNKNOWN_CONTAINER' });
    const stopped = new DockerLimitWriter(dockerWith({ inspect: async () => ({ State: { Pid: 0 } }) }));
    await expect(stopped.raiseNow('c', MiB)).rejects.toMatchObject({ code: 'E_UNKNOWN_CONTAINER' });
  });
});

describe('labels and socket paths', () => {
  it('labels round-trip; unreadable values come back undefined or null', () => {
    const labels = managerLabels(256 * MiB, { peakMemoryBytes: 3, largestFileBytes: 4 });
    expect(parseManagerLabels(labels)).toEqual({ initialLimitBytes: 256 * MiB, profile: { peakMemoryBytes: 3, largestFileBytes: 4 } });
    expect(parseManagerLabels(managerLabels(MiB, null))).toEqual({ initialLimitBytes: MiB, profile: null });
    expect(parseManagerLabels({ 'ephemera.limit.initial': '1e9', 'ephemera.profile.peak': '5' })).toEqual({ initialLimitBytes: undefined, profile: null });
  });

  it('a state dir too deep for a socket path gets a short one derived from it, the same on both ends', () => {
    expect(managerSocketPath('/var/lib/ephemera', 'acme')).toBe('/var/lib/ephemera/managers/acme.sock');
    const deep = `/tmp/${'d'.repeat(120)}`;
    const short = managerSocketPath(deep, 'acme');
    expect(short).toMatch(/^\/run\/ephemera\/sockets\/[0-9a-f]{24}\.sock$/);
    expect(managerSocketPath(deep, 'acme')).toBe(short);
    expect(managerSocketPath(deep, 'globex')).not.toBe(short);
    expect(() => managerSocketPath('/x', '../etc')).toThrow();
  });
});
