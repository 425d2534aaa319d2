import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(__dirname, '..', '..');
const bin = join(root, 'bin', 'ephemera.js');
const sixTasks = join(root, 'policy', 'traces', 'six-tasks.txt');
const dir = mkdtempSync(join(tmpdir(), 'ephemera-policy-cli-'));

function ephemera(...args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
}

beforeAll(() => {
  // `npm test` builds dist/ once before vitest starts (pretest). Rebuilding here would rewrite
  // dist/ under the test files that run the CLI at the same time (a half-written module).
  expect(existsSync(join(root, 'dist', 'policy', 'commands.js')), 'dist/ not built: run `npm run build:ts` (npm test does)').toBe(true);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ephemera policy schedule', () => {
  it('replays the six-task trace with complementarity by default', () => {
    const run = ephemera('policy', 'schedule', '--trace', sixTasks, '--nodes', '1024,1024');
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out.scoring).toBe('complementarity');
    expect(out.nodes.map((n: { alloc_mb: number; req_mb: number }) => [n.alloc_mb, n.req_mb])).toEqual([[750, 778], [450, 262]]);
    expect(out.nodes[1].tasks).toEqual(['cpu_intense_task2', 'io_intense_task4']);
    expect(out.unplaced).toEqual([]);
  });

  it('--scoring most-free and min-gap give the baseline and the thesis-text placements', () => {
    const free = JSON.parse(ephemera('policy', 'schedule', '--trace', sixTasks, '--scoring', 'most-free').stdout);
    expect(free.nodes.map((n: { alloc_mb: number; req_mb: number }) => [n.alloc_mb, n.req_mb])).toEqual([[600, 1032], [600, 8]]);
    const gap = JSON.parse(ephemera('policy', 'schedule', '--trace', sixTasks, '--scoring', 'min-gap', '--engine', 'indexed').stdout);
    expect(gap.nodes.map((n: { alloc_mb: number; req_mb: number }) => [n.alloc_mb, n.req_mb])).toEqual([[900, 1036], [300, 4]]);
  });

  it('rejects a malformed line with its number and reason, exit ≠ 0', () => {
    const bad = join(dir, 'bad.txt');
    writeFileSync(bad, 'io_intense_task1 150 2 256\ncpu_intense_task1 300 -4 0\n');
    const run = ephemera('policy', 'schedule', '--trace', bad);
    expect(run.status).not.toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/E_BAD_TRACE/);
    expect(run.stderr).toMatch(/bad\.txt:2: mem_mb must be a non-negative number/);
  });

  it('rejects bad --nodes', () => {
    const nodes = ephemera('policy', 'schedule', '--trace', sixTasks, '--nodes', '1024,lots');
    expect(nodes.status).not.toBe(0);
    expect(nodes.stderr).toMatch(/E_BAD_ARGS.*--nodes: entry 2/);
  });
});

describe('ephemera errors', () => {
  it('prints an error code once (messages never hold it; the CLI adds it)', () => {
    const run = ephemera('volume-token', 'create', '--tenant', '../x', '--state-dir', join(dir, 'volume-tokens'));
    expect(run.status).toBe(1);
    expect(run.stderr.trim()).toMatch(/^ephemera: E_BAD_CONFIG: tenant name "\.\.\/x" must match/);
    expect(run.stderr.match(/E_BAD_CONFIG/g)).toHaveLength(1);
  });
});
