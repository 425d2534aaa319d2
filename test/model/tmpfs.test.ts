// The model test on a fresh tmpfs.
import { makeTmpfs } from '../support/tmpdirs';
import { modelSuite } from './suite';

modelSuite('tmpfs', () => makeTmpfs());
