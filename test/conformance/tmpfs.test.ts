// The conformance suite on a fresh tmpfs: the reference every other file system is held to.
import { makeTmpfs } from '../support/tmpdirs';
import { conformanceSuite } from './suite';

conformanceSuite('tmpfs', () => makeTmpfs());
