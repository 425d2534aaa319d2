import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY_CONFIG, loadPolicyConfig, MiB, PolicyError, scaled } from '../../policy';

const dir = mkdtempSync(join(tmpdir(), 'ephemera-policy-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function errorOf(fn: () => unknown): PolicyError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return err as PolicyError;
  }
  throw new Error('expected an error');
}

describe('policy configuration', () => {
  it('defaults are the thesis constants', () => {
    expect(DEFAULT_POLICY_CONFIG.safetyFactor).toBe(1.1);
    expect(DEFAULT_POLICY_CONFIG.pools).toEqual({ sharing: true, harvestThreshold: 0.9, poolCompare: 'scaled', scope: 'tenant' });
    expect(DEFAULT_POLICY_CONFIG.headroom).toEqual({ minBytes: 8 * MiB, fraction: 0.05 });
    expect(DEFAULT_POLICY_CONFIG.scheduler.scoring).toBe('complementarity');
  });

  it('the safety factor does not round 1.1 · 10 up to 12', () => {
    expect(scaled(10, DEFAULT_POLICY_CONFIG)).toBe(11);
    expect(scaled(256 * MiB, DEFAULT_POLICY_CONFIG)).toBe(Math.ceil(281.6 * MiB));
  });

  it('loads YAML and JSON, filling what is missing with defaults', () => {
    const yaml = loadPolicyConfig(write('p.yaml', 'pools:\n  scope: function\n  poolCompare: raw\nscheduler:\n  scoring: min-gap\n'));
    expect(yaml.pools).toMatchObject({ scope: 'function', poolCompare: 'raw', harvestThreshold: 0.9 });
    expect(yaml.scheduler.scoring).toBe('min-gap');
    const json = loadPolicyConfig(write('p.json', JSON.stringify({ safetyFactor: 1.2, eviction: { antiThrashWindowMs: 500 } })));
    expect(json.safetyFactor).toBe(1.2);
    expect(json.eviction).toEqual({ antiThrashWindowMs: 500, promoteClosed: false, promoteQuietMs: 1000 });
  });

  it('a bad file is rejected with E_BAD_CONFIG listing the path and reason of every issue', () => {
    const path = write(
      'bad.yaml',
      'safetyFactor: fast\npools:\n  scope: node\n  harvestThreshold: 2\nheadroom:\n  fraction: -1\nscheduler:\n  scoring: random\nunknownSection: 1\n',
    );
    const err = errorOf(() => loadPolicyConfig(path));
    expect(err.code).toBe('E_BAD_CONFIG');
    expect(err.details.map((d) => d.path).sort()).toEqual(
      ['(root)', 'headroom.fraction', 'pools.harvestThreshold', 'pools.scope', 'safetyFactor', 'scheduler.scoring'].sort(),
    );
    for (const d of err.details) expect(d.reason.length).toBeGreaterThan(0);
    expect(err.message).toContain(path);
    expect(err.message).toContain('pools.scope');
    expect(err.message).toContain('unknownSection');
  });

  it('syntax errors and unreadable files are E_BAD_CONFIG too', () => {
    expect(errorOf(() => loadPolicyConfig(write('broken.json', '{"pools": '))).code).toBe('E_BAD_CONFIG');
    expect(errorOf(() => loadPolicyConfig(write('broken.yaml', 'pools: [unclosed\n'))).code).toBe('E_BAD_CONFIG');
    expect(errorOf(() => loadPolicyConfig(join(dir, 'missing.yaml'))).code).toBe('E_BAD_CONFIG');
  });
});
