import type { Command } from 'commander';
import { nodeStateDirOption } from '../../engine/index';
import { ensureVolumeToken } from './tokens';

/** `ephemera volume-token create --tenant T`: the operator's binding of volumes to a tenant. */
export function registerVolumeCommands(program: Command): void {
  const token = program.command('volume-token').description("per-tenant tokens for the Docker volume driver (volume-opt=token=…): a volume's tenant is its token's");
  token
    .command('create')
    .description("print the tenant's volume token (made once, 0600 under the node's state dir; printed again on later calls)")
    .requiredOption('--tenant <name>', 'the tenant')
    .addOption(nodeStateDirOption("the node's state dir (as given to ephemera node)"))
    .action(async (opts: { tenant: string; stateDir: string }) => {
      process.stdout.write(`${await ensureVolumeToken(opts.stateDir, opts.tenant)}\n`);
    });
}
