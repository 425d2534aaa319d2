import { Command } from 'commander';
import { exitCodeOf, formatError } from '../errors/index';
import { registerFusefsCommands } from '../fusefs/index';
import { registerPolicyCommands } from '../policy/index';
import { registerBenchCommands } from '../bench/index';
import { registerEngineCommands } from '../engine/index';
import { registerManagerCommands } from '../manager/index';
import { registerControllerCommands } from '../controller/index';
import { openEphemeraTmp, registerNodeCommands, registerVolumeCommands } from '../node/index';

/** Builds the `ephemera` command tree; every layer registers its own subcommands. */
export function buildProgram(): Command {
  const program = new Command('ephemera')
    .description('Ephemera: a memory-harvesting /tmp for serverless function containers')
    .version('0.1.0')
    .showHelpAfterError();
  registerFusefsCommands(program);
  registerPolicyCommands(program);
  // The engine knows no node daemon: `--tmp ephemera` gets its provider from the node's composition.
  registerEngineCommands(program, openEphemeraTmp);
  registerManagerCommands(program);
  registerControllerCommands(program);
  registerNodeCommands(program);
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
