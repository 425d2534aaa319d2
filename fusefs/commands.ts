import type { Command } from 'commander';

/** Registers this layer's `ephemera` subcommands. */
export function registerFusefsCommands(program: Command): void {
  void program;
}
