import type { Command } from 'commander';

/** Registers this layer's `ephemera` subcommands. */
export function registerManagerCommands(program: Command): void {
  void program;
}
