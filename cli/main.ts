import { Command } from 'commander';
import { exitCodeOf, formatError } from '../errors/index';
import { registerFusefsCommands } from '../fusefs/commands';
import { registerPolicyCommands } from '../policy/commands';
import { registerBenchCommands } from '../bench/commands';
import { registerEngineCommands } from '../engine/commands';
import { registerManagerCommands } from '../manager/commands';
import { registerControllerCommands } from '../controller/commands';
import { registerVolumeCommands } from '../volumes/index';

/** Builds the `ephemera` command tree; every layer registers its own subcommands. */
export function buildProgram(): Command {
  const program = new Command('ephemera')
    .description('Ephemera: a memory-harvesting /tmp for serverless function containers')
    .version('0.1.0')
    .showHelpAfterError();
  registerFusefsCommands(program);
  registerPolicyCommands(program);
  registerEngineCommands(program);
  registerManagerCommands(program);
  registerControllerCommands(program);
  registerVolumeCommands(program);
  registerBenchCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  await buildProgram().parseAsync(argv);
}

/**
 * Prints the error that ended a command as `ephemera: CODE: message` (the code once: messages never
 * hold it) and returns the exit status it asks for. bin/ephemera.js calls this.
 */
export function reportError(err: unknown, stderr: Pick<NodeJS.WritableStream, 'write'> = process.stderr): number {
  stderr.write(`ephemera: ${formatError(err)}\n`);
  return exitCodeOf(err);
}
