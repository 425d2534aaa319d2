import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { registerBenchCommands } from '../../bench/commands';

function program(): Command {
  const p = new Command('ephemera').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  registerBenchCommands(p);
  for (const c of p.commands) c.exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  return p;
}

afterEach(() => vi.restoreAllMocks());

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
});
