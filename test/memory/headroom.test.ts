import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_HEADROOM, headroomBytes, parseHeadroomConfig, roomBelowMark, usageMark } from '../../fusefs/memory';

const MiB = 1024 * 1024;

describe('headroom arithmetic', () => {
  it.each([
    // limit, mark: the 8 MiB floor wins below 160 MiB, 5 % above.
    [64 * MiB, 56 * MiB],
    [128 * MiB, 120 * MiB],
    [160 * MiB, 152 * MiB],
    [1024 * MiB, 1024 * MiB - Math.ceil(1024 * MiB * 0.05)],
    [4 * MiB, 0],
    [0, 0],
    [Infinity, Infinity],
  ])('limit %d → mark %d', (limit, mark) => {
    expect(usageMark(limit)).toBe(mark);
  });

  it('is configurable', () => {
    const config = parseHeadroomConfig({ minBytes: 16 * MiB, fraction: 0.1 });
    expect(usageMark(128 * MiB, config)).toBe(112 * MiB);
    expect(usageMark(1024 * MiB, config)).toBe(1024 * MiB - Math.ceil(102.4 * MiB));
    expect(parseHeadroomConfig(undefined)).toEqual(DEFAULT_HEADROOM);
  });

  it('rejects bad config and input with E_BAD_CONFIG naming the option', () => {
    expect(() => parseHeadroomConfig({ fraction: 2 })).toThrow(expect.objectContaining({ code: 'E_BAD_CONFIG', message: expect.stringContaining('fraction') }));
    expect(() => parseHeadroomConfig({ minBytes: -1 })).toThrow(expect.objectContaining({ code: 'E_BAD_CONFIG', message: expect.stringContaining('minBytes') }));
    expect(() => parseHeadroomConfig({ extra: 1 })).toThrow(expect.objectContaining({ code: 'E_BAD_CONFIG' }));
    expect(() => usageMark(-1)).toThrow(expect.objectContaining({ code: 'E_BAD_CONFIG' }));
    expect(() => roomBelowMark(Number.NaN, MiB)).toThrow(expect.objectContaining({ code: 'E_BAD_CONFIG' }));
  });

  it('properties: 0 ≤ mark ≤ limit, headroom ≥ both terms, room never negative, monotone in the limit', () => {
    const config = fc.record({ minBytes: fc.integer({ min: 0, max: 1 << 30 }), fraction: fc.double({ min: 0, max: 1, noNaN: true }) });
    const limit = fc.integer({ min: 0, max: 2 ** 45 });
    fc.assert(
      fc.property(config, limit, limit, fc.integer({ min: 0, max: 2 ** 46 }), (cfg, a, b, usage) => {
        const mark = usageMark(a, cfg);
        expect(mark).toBeGreaterThanOrEqual(0);
        expect(mark).toBeLessThanOrEqual(a);
        if (mark > 0) {
          expect(a - mark).toBeGreaterThanOrEqual(cfg.minBytes);
          expect(a - mark).toBeGreaterThanOrEqual(a * cfg.fraction - 1);
          expect(headroomBytes(a, cfg)).toBe(a - mark);
        }
        const room = roomBelowMark(usage, a, cfg);
        expect(room).toBeGreaterThanOrEqual(0);
        expect(usage + room <= mark || room === 0).toBe(true);
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        expect(usageMark(lo, cfg)).toBeLessThanOrEqual(usageMark(hi, cfg));
      }),
    );
  });
});
