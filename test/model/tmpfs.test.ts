// The model test on a fresh tmpfs.
import { describe, it } from 'vitest';
import { makeTmpfs } from '../support/tmpdirs';
import { skipping, tmpfsMountUnavailable } from '../support/capabilities';
import { modelSuite } from './suite';

// A file without tests fails in vitest: a skipped describe stands in where no tmpfs can be mounted.
const noTmpfs = tmpfsMountUnavailable();
if (noTmpfs) describe.skip(`model test on tmpfs (${skipping('model test on tmpfs', noTmpfs)})`, () => it('needs a tmpfs'));
else modelSuite('tmpfs', () => makeTmpfs());
