import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { Engine, FUNCTION_RECIPE, PlainDirTmpProvider, ProfileStore, profileFunction, type TmpProvider, type FunctionSpec, type TmpCreateOptions } from '../../engine/index';
import { ensureDocker, testRunLabels } from '../support/docker';
import { REPO } from '../support/mount';

/** A run-<pid> state dir may belong to a concurrent `ephemera run` of another test, never to a dead one. */
async function isLivePid(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const docker = await ensureDocker();
const labels = testRunLabels('profile');
const MiB = 1024 * 1024;

/**
 * Holds a touched buffer of argv[1] MiB (every page written, so it is resident), writes a file of
 * argv[2] MiB and a 1 MiB one in 1 MiB chunks (one `b"x" * n` would be a second, transient n-byte
 * buffer and the true peak), and reports its own anonymous rss while the buffer is alive: what the
 * function really used, to compare the cgroup sampler against.
 */
const FUNCTION = `
import sys, re, time
buf_mib, file_mib = int(sys.argv[1]), int(sys.argv[2])
buf = bytearray(buf_mib << 20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
chunk = b"\\x01" * (1 << 20)
with open("/tmp/big", "wb") as f:
    for _ in range(file_mib):
        f.write(chunk)
with open("/tmp/small", "wb") as f:
    f.write(b"\\x02" * (1 << 20))
status = open("/proc/self/status").read()
# Hold the peak for 50 ms: ten sampling periods, the resolution this test claims, no more.
time.sleep(0.05)
print(int(re.search(r"RssAnon:\\s+(\\d+) kB", status).group(1)) * 1024)
`;

/** The plain-directory provider, recording the profiling flag it was given. */
class RecordingProvider implements TmpProvider {
  readonly profilingFlags: boolean[] = [];
  constructor(private readonly inner: PlainDirTmpProvider) {}
  create(name: string, spec: FunctionSpec, options: TmpCreateOptions) {
    this.profilingFlags.push(options.profiling);
    return this.inner.create(name);
  }
  attach(name: string, cgroupPath: string) {
    return this.inner.attach(name, cgroupPath);
  }
  remove(name: string) {
    return this.inner.remove(name);
  }
}

describe.skipIf(docker.skipReason !== undefined)('profiling run (thesis 4.4.1): U and F', () => {
  let engine: Engine;
  let image: string;
  let stateDir: string;
  let provider: RecordingProvider;
  let plain: PlainDirTmpProvider;

  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'eph-profile-state-'));
    plain = await PlainDirTmpProvider.open(path.join(stateDir, 'mounts'));
    provider = new RecordingProvider(plain);
    engine = await Engine.connect({ tmpProvider: provider });
    image = (await engine.ensureImage(FUNCTION_RECIPE)).tag;
  }, 240_000);

  afterAll(async () => {
    if (engine) await engine.removeManaged(labels);
    if (plain) await plain.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  for (const tmp of [{ kind: 'bind' as const }, { kind: 'overlay' as const }]) {
    it(`records U and F within 10 % of what the function used (${tmp.kind} /tmp), max over inputs, stored durably`, async () => {
      const store = new ProfileStore(path.join(stateDir, `profiles-${tmp.kind}.json`));
      const spec = {
        image,
        command: ['python3', '-c', FUNCTION],
        memoryMiB: 256,
        tmp,
        user: 'fn',
        tenant: 'acme',
        function: `resize-${tmp.kind}`,
        labels,
      };
      const { profile, runs } = await profileFunction(engine, spec, [['40', '30'], ['90', '50'], ['20', '10']], { store, timeoutMs: 60_000 });
      const reported = runs.map((r) => Number(r.result.stdout.trim()));
      console.log(
        `${tmp.kind}: U=${(profile.peakRssBytes / MiB).toFixed(1)} MiB (function's own RssAnon max ${(Math.max(...reported) / MiB).toFixed(1)} MiB), ` +
          `F=${(profile.largestFileBytes / MiB).toFixed(1)} MiB, ${profile.samples} samples`,
      );
      for (const [i, run] of runs.entries()) {
        console.log(`  input ${run.args.join(' ')}: sampled ${(run.peakRssBytes / MiB).toFixed(1)} MiB, reported ${(reported[i]! / MiB).toFixed(1)} MiB, ${run.result.wallMs} ms`);
        expect(run.result.exitCode).toBe(0);
        expect(Math.abs(run.peakRssBytes - reported[i]!) / reported[i]!).toBeLessThan(0.1);
      }
      const used = Math.max(...reported);
      expect(Math.abs(profile.peakRssBytes - used) / used).toBeLessThan(0.1);
      expect(profile.peakRssBytes).toBeGreaterThanOrEqual(90 * MiB);
      expect(profile.largestFileBytes).toBe(50 * MiB);
      expect(profile.limitBytes).toBe(256 * MiB);
      expect(profile.key).toBe(`acme/resize-${tmp.kind}`);

      const reread = JSON.parse(await readFile(store.file, 'utf8'));
      expect(reread[profile.key]).toEqual(profile);
      expect(await new ProfileStore(store.file).get(profile.key)).toEqual(profile);
      expect(await engine.listManaged(labels)).toEqual([]);
    }, 120_000);
  }

  it('ephemera profile (CLI) runs on an Ephemera /tmp by default, stores the profile, leaves no daemon state', async () => {
    const cliState = path.join(stateDir, 'cli');
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      [path.join(REPO, 'bin/ephemera.js'), 'profile', 'busybox', '--function', 'writer', '--tenant', 'acme', '--memory', '64', '--input', '6', '--input', '3', '--',
        '/bin/sh', '-c', 'dd if=/dev/zero of=/tmp/out bs=1M count="$0" 2>/dev/null'],
      { encoding: 'utf8', env: { ...process.env, EPHEMERA_STATE_DIR: cliState }, timeout: 120_000 },
    );
    const profile = JSON.parse(stdout.trim());
    expect(profile).toMatchObject({ key: 'acme/writer', limitBytes: 64 * MiB, largestFileBytes: 6 * MiB });
    expect(stderr).toContain(`stored in ${path.join(cliState, 'profiles.json')}`);
    expect(JSON.parse(await readFile(path.join(cliState, 'profiles.json'), 'utf8'))['acme/writer']).toEqual(profile);
    // Its own node daemon (for the Ephemera /tmp) was cleaned up with it.
    const ownDirs = (await readdir('/var/lib/ephemera').catch(() => [] as string[])).filter((d) => /^run-\d+$/.test(d));
    for (const d of ownDirs) expect(await isLivePid(Number(d.slice(4)))).toBe(true);
  }, 150_000);

  it('asks the provider for the disk tier (profiling: true) only during profiling', async () => {
    provider.profilingFlags.length = 0;
    const fc = await engine.start({ image, command: ['true'], memoryMiB: 64, tmp: { kind: 'bind' }, labels });
    await fc.remove();
    await profileFunction(engine, { image, command: ['true'], memoryMiB: 64, tmp: { kind: 'bind' }, labels }, [[]]);
    expect(provider.profilingFlags).toEqual([false, true]);
  }, 60_000);

  it('keeps concurrent updates of the store (no lost write)', async () => {
    const store = new ProfileStore(path.join(stateDir, 'concurrent.json'));
    const base = { image: 'x', command: ['y'], limitBytes: 1, peakRssBytes: 1, largestFileBytes: 1, inputs: 1, sampleIntervalMs: 5, samples: 1, profiledAt: '' };
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put({ ...base, key: `t/f${i}` })));
    expect(Object.keys(await store.all())).toHaveLength(20);
  });
});
