// The model test on an Ephemera mount: byte-for-byte agreement with the reference model.
import { skipLoudly, startMount } from '../support/mount';
import { modelSuite } from './suite';

if (!skipLoudly('model test on Ephemera')) {
  modelSuite('ephemera', async () => {
    const m = await startMount();
    return { dir: m.dir, teardown: () => m.teardown() };
  });
}
