// The model test on an Ephemera mount: byte-for-byte agreement with the reference model.
import { describe, it } from 'vitest';
import { skipLoudly, startMount } from '../support/mount';
import { modelSuite } from './suite';

// A file without tests fails in vitest: a skipped describe stands in where nothing can be mounted.
if (skipLoudly('model test on Ephemera')) describe.skip('model test on Ephemera (needs a FUSE mount)', () => it('needs a FUSE mount'));
else {
  modelSuite('ephemera', async () => {
    const m = await startMount();
    return { dir: m.dir, teardown: () => m.teardown() };
  });
}
