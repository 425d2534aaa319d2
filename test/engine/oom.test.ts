import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, FUNCTION_RECIPE, type TmpMode } from '../../engine/index';
import { ensureDocker, testRunLabels } from '../support/docker';

const docker = await ensureDocker();
const labels = testRunLabels('oom');

/** Two 60 MiB files, then one of 160 MiB, written in 1 MiB chunks: more than the 128 MiB limit in total. */
const WRITER = `
import os, time
chunk = b"\\x5a" * (1 << 20)
def write(name, mib):
    with open(os.path.join("/tmp", name), "wb") as f:
        for _ in range(mib):
            f.write(chunk)
t0 = time.monotonic()
write("a", 60); write("b", 60); write("c", 160)
print(f"done {time.monotonic() - t0:.3f}")
`;

describe.skipIf(docker.skipReason !== undefined)('OOM accounting: python writing 2x60 + 160 MiB into /tmp of a 128 MiB container', () => {
  let engine: Engine;
  let image: string;

  beforeAll(async () => {
    engine = docker.engine!;
    image = (await engine.ensureImage(FUNCTION_RECIPE)).tag;
  }, 240_000);

  afterAll(async () => {
    if (engine) await engine.removeManaged(labels);
  });

  const run = async (tmp: TmpMode) => {
    const fc = await engine.start({ image, command: ['python3', '-c', WRITER], memoryMiB: 128, tmp, user: 'fn', labels });
    try {
      return await fc.invoke([], { timeoutMs: 60_000 });
    } finally {
      await fc.remove();
    }
  };

  it('is OOM-killed on --tmpfs /tmp (kernel oom_kill counter) and completes on overlay /tmp', async () => {
    const onTmpfs = await run({ kind: 'tmpfs' });
    const onOverlay = await run({ kind: 'overlay' });
    console.log(
      `tmpfs: exit ${onTmpfs.exitCode}, ${onTmpfs.oomKills} OOM kill(s), ${onTmpfs.wallMs} ms\n` +
        `overlay: exit ${onOverlay.exitCode}, ${onOverlay.oomKills} OOM kill(s), ${onOverlay.wallMs} ms (${onOverlay.stdout.trim()})`,
    );
    expect(onTmpfs.oomKills).toBeGreaterThanOrEqual(1);
    expect(onTmpfs.exitCode).toBe(137);
    expect(onOverlay).toMatchObject({ exitCode: 0, oomKills: 0 });
    expect(onOverlay.stdout).toMatch(/^done /);
    expect(await engine.listManaged(labels)).toEqual([]);
  }, 120_000);
});
