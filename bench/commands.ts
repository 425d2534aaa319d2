import type { Command } from 'commander';

/** Registers `ephemera bench <suite>`. */
export function registerBenchCommands(program: Command): void {
  void program;
}
