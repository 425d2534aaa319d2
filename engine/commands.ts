import type { Command } from 'commander';

/** Registers this layer's `ephemera` subcommands. */
export function registerEngineCommands(program: Command): void {
  void program;
}
