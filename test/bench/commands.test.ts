import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { registerBenchCommands } from '../../bench/commands';
import type { TargetFailure } from '../../bench/frame';
import { toJsonDocument } from '../../bench/summary';
import { impactRow } from './rows';

function program(): Command {
  const p = new Command('ephemera').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  registerBenchCommands(p);
  for (const c of p.commands) c.exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  return p;
}

afterEach(() => {
  vi.restoreAllMocks();
  process.exitCode = undefined;
});

describe('ephemera bench', () => {
  it('lists the registered suites', async () => {
    const written: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    await program().parseAsync(['node', 'ephemera', 'bench', 'list']);
    expect(written.join('')).toMatch(/^fio\s+fio and create\/unlink loops/m);
  });

  it('refuses an unknown suite with E_UNKNOWN_SUITE', async () => {
    await expect(program().parseAsync(['node', 'ephemera', 'bench', 'nope'])).rejects.toMatchObject({ code: 'E_UNKNOWN_SUITE' });
  });

  it('refuses bad numbers before running anything', async () => {
    await expect(program().parseAsync(['node', 'ephemera', 'bench', 'fio', '--passes', '0'])).rejects.toMatchObject({
      code: 'commander.invalidArgument',
    });
    await expect(program().parseAsync(['node', 'ephemera', 'bench', 'fio', '--time-cap', '-1'])).rejects.toMatchObject({
      code: 'commander.invalidArgument',
    });
  });

  it('refuses a target the suite cannot run, naming it', async () => {
    await expect(program().parseAsync(['node', 'ephemera', 'bench', 'fio', '--targets', 'tmpfs,ramdisk'])).rejects.toMatchObject({
      code: 'E_UNKNOWN_TARGET',
      message: expect.stringContaining('ramdisk'),
    });
  });

  it('table --headline prints the summary above the table, and exits 1 only for a failure that is not a baseline’s OOM kill', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eph-bench-headline-'));
    try {
      const pass = (target: string, seconds: number | undefined, oomKills: number) => impactRow(target, 64, seconds, oomKills);
      const write = (name: string, failures: TargetFailure[]): string => {
        const file = path.join(dir, name);
        const run = { suite: 'impact', quick: true, passes: 1, targets: [], startedAt: '', finishedAt: '', host: { kernel: '', cpus: 2, memoryMiB: 1 }, report: '/x/impact/report.html' };
        fs.writeFileSync(file, JSON.stringify(toJsonDocument([pass('ephemera', 3, 0), pass('tmpfs', undefined, 2), pass('overlay', 6, 0)], failures, run)));
        return file;
      };
      const killed: TargetFailure = { target: 'tmpfs', pass: 1, workload: 'impact-memory-limit', code: 'E_OOM_KILLED', message: 'cold: 2 OOM kill(s)' };
      const written: string[] = [];
      vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
        written.push(String(chunk));
        return true;
      });
      await program().parseAsync(['node', 'ephemera', 'bench', 'table', '--headline', write('ok.json', [killed])]);
      const out = written.join('').split('\n');
      expect(out.slice(0, 5)).toEqual([
        'Ephemera: — tmpfs (no row with a ratio), 2.00× overlay (median of 1 row); > 1 = faster',
        'OOM kills avoided: 2 (tmpfs 2, overlay 0) in 1 row where Ephemera finished with 0',
        'Ephemera OOM kills: 0',
        'Report: /x/impact/report.html',
        '',
      ]);
      expect(out[5]).toMatch(/^suite\s+target\s+workload\s+time/);
      expect(process.exitCode ?? 0).toBe(0);

      written.length = 0;
      const broken: TargetFailure = { target: 'ephemera', pass: 1, workload: 'impact-memory-limit', code: 'E_WORKLOAD_FAILED', message: 'exit 1' };
      await program().parseAsync(['node', 'ephemera', 'bench', 'table', '--headline', write('bad.json', [killed, broken])]);
      expect(written.join('')).toMatch(/^FAILED steps: 1 \(ephemera impact-memory-limit: E_WORKLOAD_FAILED\)/m);
      expect(process.exitCode).toBe(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
