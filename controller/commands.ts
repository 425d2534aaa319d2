import type { Command } from 'commander';

/** Registers this layer's `ephemera` subcommands. */
export function registerControllerCommands(program: Command): void {
  void program;
}
