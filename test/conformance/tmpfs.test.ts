// The conformance suite on a fresh tmpfs: the reference every other file system is held to.
import { describe, it } from 'vitest';
import { makeTmpfs } from '../support/tmpdirs';
import { skipping, tmpfsMountUnavailable } from '../support/capabilities';
import { conformanceSuite } from './suite';

// A file without tests fails in vitest: a skipped describe stands in where no tmpfs can be mounted.
const noTmpfs = tmpfsMountUnavailable();
if (noTmpfs) describe.skip(`conformance on tmpfs (${skipping('conformance on tmpfs', noTmpfs)})`, () => it('needs a tmpfs'));
else conformanceSuite('tmpfs', () => makeTmpfs());
