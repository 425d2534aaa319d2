import { describe, it } from 'vitest';
import { conformanceSuite } from './suite';
import { skipLoudly, startMount } from '../support/mount';

// The same suite as tmpfs.test.ts, on an Ephemera mount: every result must match tmpfs'.
// Default mounts answer ENOTSUP to xattrs (each would cost a round trip per write()); a mount
// with --xattrs must match tmpfs there too.
// A file without tests fails in vitest: a skipped describe stands in where nothing can be mounted.
if (skipLoudly('conformance on Ephemera')) describe.skip('conformance on Ephemera (needs a FUSE mount)', () => it('needs a FUSE mount'));
else {
  conformanceSuite(
    'ephemera',
    async () => {
      const m = await startMount();
      return { dir: m.dir, teardown: () => m.teardown() };
    },
    { xattrs: false },
  );
  conformanceSuite('ephemera --xattrs', async () => {
    const m = await startMount({ args: ['--xattrs'] });
    return { dir: m.dir, teardown: () => m.teardown() };
  });
  // Journaling every change (issue 14) must not change a single answer.
  conformanceSuite(
    'ephemera --restartable',
    async () => {
      const m = await startMount({ args: ['--restartable'] });
      return { dir: m.dir, teardown: () => m.teardown() };
    },
    { xattrs: false },
  );
}
