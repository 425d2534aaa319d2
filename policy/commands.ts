import type { Command } from 'commander';

/** Registers this layer's `ephemera` subcommands. */
export function registerPolicyCommands(program: Command): void {
  void program;
}
