// The POSIX conformance suite, parameterised only by a directory (after go-fuse's posixtest):
// run it on tmpfs and on an Ephemera mount, and the two must agree. Every test gets its own
// fresh subdirectory, so a failure leaves nothing behind for the next test to trip on.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { makeTmpfs } from '../support/tmpdirs';
import { loadSys, slug, type SuiteContext, type SuiteSetup } from './common';
import { defineFileTests } from './files';
import { defineMetadataTests } from './metadata';
import { defineNamespaceTests } from './namespace';
import { definePermissionTests } from './permissions';
import { defineScaleTests } from './scale';
import { diffTranscripts, runTranscript, STANDARD_SCRIPT } from './transcript';
import { defineXattrTests } from './xattrs';

export type { SuiteDir, SuiteSetup } from './common';
export { diffTranscripts, runTranscript, STANDARD_SCRIPT, type Step } from './transcript';

export interface ConformanceOptions {
  /** false: the file system answers ENOTSUP to every xattr call (checked), so the tmpfs transcript is compared without its xattr steps. */
  xattrs?: boolean;
}

export function conformanceSuite(label: string, setup: SuiteSetup, options: ConformanceOptions = {}): void {
  const script = options.xattrs === false ? STANDARD_SCRIPT.filter((s) => !s.op.includes('xattr')) : STANDARD_SCRIPT;
  describe(`conformance: ${label}`, () => {
    let root: string | undefined;
    let teardown: (() => Promise<void>) | undefined;
    let current: string | undefined;
    let counter = 0;

    const ctx: SuiteContext = {
      label,
      sys: loadSys(),
      dir: () => {
        if (current === undefined) throw new Error('conformance: no per-test directory (used outside a test?)');
        return current;
      },
      p: (...names: string[]) => path.join(ctx.dir(), ...names),
    };

    beforeAll(async () => {
      const made = await setup();
      root = made.dir;
      teardown = made.teardown;
    });

    afterAll(async () => {
      await teardown?.();
    });

    beforeEach((testContext) => {
      if (root === undefined) throw new Error(`conformance ${label}: setup did not provide a directory`);
      counter += 1;
      current = path.join(root, `${String(counter).padStart(3, '0')}-${slug(testContext.task.name)}`);
      fs.mkdirSync(current);
      fs.chmodSync(current, 0o755);
    });

    afterEach(() => {
      if (current !== undefined) fs.rmSync(current, { recursive: true, force: true });
      current = undefined;
    });

    defineMetadataTests(ctx);
    defineFileTests(ctx);
    defineNamespaceTests(ctx);
    defineXattrTests(ctx);
    definePermissionTests(ctx);
    defineScaleTests(ctx);

    describe('comparing results', () => {
      it('the standard script gives the same transcript here as on a fresh tmpfs', async () => {
        const reference = await makeTmpfs({ size: '64m' });
        let expected: string[];
        try {
          expected = runTranscript(reference.dir, script);
        } finally {
          await reference.teardown();
        }
        const actual = runTranscript(ctx.dir(), script);
        expect(diffTranscripts(expected, actual)).toEqual([]);
        expect(actual.length).toBe(script.length);
      });
    });
  });
}
