// Volume: one 64 MiB file written and read back in mismatched chunk sizes, and thousands of
// small files created, verified and removed.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { names, patternBytes, preadExact, pwriteAll, type SuiteContext, withFd } from './common';

const MiB = 1 << 20;
const LARGE_FILE_BYTES = 64 * MiB;
const SMALL_FILES = 2000;

export function defineScaleTests(ctx: SuiteContext): void {
  const { p } = ctx;

  describe('volume', () => {
    it('a 64 MiB file written in 1 MiB chunks reads back identical in odd-sized chunks', () => {
      const written = createHash('sha256');
      withFd(p('large'), 'w', (fd) => {
        for (let offset = 0; offset < LARGE_FILE_BYTES; offset += MiB) {
          const chunk = patternBytes(MiB, offset / MiB + 1);
          written.update(chunk);
          pwriteAll(fd, offset, chunk);
        }
      });
      expect(fs.statSync(p('large')).size).toBe(LARGE_FILE_BYTES);
      const read = createHash('sha256');
      const readChunk = 3 * MiB + 4097;
      let total = 0;
      withFd(p('large'), 'r', (fd) => {
        for (;;) {
          const chunk = preadExact(fd, total, readChunk);
          if (chunk.length === 0) break;
          read.update(chunk);
          total += chunk.length;
        }
      });
      expect(total).toBe(LARGE_FILE_BYTES);
      expect(read.digest('hex')).toBe(written.digest('hex'));
      fs.unlinkSync(p('large'));
    });

    it(`${SMALL_FILES} small files: create, list, verify, remove`, () => {
      fs.mkdirSync(p('many'));
      const expected: string[] = [];
      for (let i = 0; i < SMALL_FILES; i++) {
        const name = `f${i}`;
        expected.push(name);
        fs.writeFileSync(p('many', name), patternBytes(4096 + (i % 7), i + 1));
      }
      expect(names(p('many'))).toEqual(expected.sort());
      for (let i = 0; i < SMALL_FILES; i++) {
        const data = fs.readFileSync(p('many', `f${i}`));
        if (!data.equals(patternBytes(4096 + (i % 7), i + 1))) {
          expect.fail(`f${i} does not read back what was written`);
        }
      }
      for (const name of expected) fs.unlinkSync(p('many', name));
      expect(fs.readdirSync(p('many'))).toEqual([]);
      fs.rmdirSync(p('many'));
    });
  });
}
