import { conformanceSuite } from './suite';
import { skipLoudly, startMount } from '../support/mount';

// The same suite as tmpfs.test.ts, on an Ephemera mount: every result must match tmpfs'.
if (!skipLoudly('conformance on Ephemera')) {
  conformanceSuite('ephemera', async () => {
    const m = await startMount();
    return { dir: m.dir, teardown: () => m.teardown() };
  });
}
