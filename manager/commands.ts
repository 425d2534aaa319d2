import type { Command } from 'commander';
import { nodeStateDirOption } from '../engine/index';
import { errorMessage } from '../errors/index';
import { isLinkError } from '../link/index';
import { isManagerError } from './errors';
import type { ManagerStatus } from '../link/index';
import { fetchManagerMetrics, fetchManagerStatus, listManagerTenants } from './status-client';

const MiB = 1024 * 1024;

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1);
}

export function formatStatusTable(statuses: readonly ManagerStatus[]): string {
  const lines: string[] = [];
  for (const s of statuses) {
    lines.push(`tenant ${s.tenant}  pid ${s.pid}  sharing ${s.sharing ? 'on' : 'off'}  mounts ${s.mounts}  plans ok ${s.plans.executed} rolled back ${s.plans.rolledBack} inconsistent ${s.plans.inconsistent}`);
    const rows = [['CONTAINER', 'FUNCTION', 'POOL', 'RUN', 'QUEUE', 'INIT MiB', 'LIMIT MiB', 'USAGE MiB', 'STORE MEM MiB', 'STORE DISK MiB', 'MOUNT']];
    for (const c of s.containers) {
      rows.push([c.id.slice(0, 12), c.function, c.pool, c.running ? 'yes' : 'no', String(c.queued), mib(c.initialLimitBytes), mib(c.limitBytes), mib(c.usageBytes), mib(c.storeMemoryBytes), mib(c.storeDiskBytes), c.mountConnected ? 'yes' : 'no']);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) lines.push(`  ${r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}`);
    if (s.loans.length === 0) lines.push('  no loans');
    for (const l of s.loans) {
      lines.push(`  loan ${l.lender.slice(0, 12)} → ${l.borrower.slice(0, 12)}  ${mib(l.bytes)} MiB${l.returnAttempts ? `  (return pending, ${l.returnAttempts} attempts)` : ''}`);
    }
  }
  return lines.join('\n');
}

/** Runs `visit` for the chosen tenant or every tenant with a manager socket; errors are printed with their code, exit 2. */
async function eachManager(opts: { tenant?: string; stateDir: string }, visit: (tenant: string) => Promise<void>): Promise<void> {
  const tenants = opts.tenant ? [opts.tenant] : await listManagerTenants(opts.stateDir);
  if (tenants.length === 0) {
    process.stderr.write(`E_NO_MANAGER: no tenant manager socket under ${opts.stateDir}/managers\n`);
    process.exitCode = 2;
    return;
  }
  for (const t of tenants) {
    try {
      await visit(t);
    } catch (err) {
      const code = isManagerError(err) || isLinkError(err) ? err.code : 'E_NO_MANAGER';
      process.stderr.write(`${code}: tenant ${t}: ${errorMessage(err)}\n`);
      process.exitCode = 2;
    }
  }
}

/** Registers this layer's `ephemera` subcommands. */
export function registerManagerCommands(program: Command): void {
  const manager = program.command('manager').description('tenant managers: pools, limits, loans');
  manager
    .command('status')
    .description("show each tenant manager's pools, limits, loans and store usage (read over its socket)")
    .option('--tenant <tenant>', 'only this tenant')
    .addOption(nodeStateDirOption("state directory (`ephemera node`'s by default)"))
    .option('--json', 'print JSON')
    .action(async (opts: { tenant?: string; stateDir: string; json?: boolean }) => {
      const statuses: ManagerStatus[] = [];
      await eachManager(opts, async (t) => void statuses.push(await fetchManagerStatus(opts.stateDir, t)));
      if (opts.json) process.stdout.write(`${JSON.stringify(opts.tenant ? (statuses[0] ?? null) : statuses, null, 2)}\n`);
      else if (statuses.length > 0) process.stdout.write(`${formatStatusTable(statuses)}\n`);
    });
  manager
    .command('metrics')
    .description("print each tenant manager's Prometheus metrics (text format; every series is labelled with its tenant)")
    .option('--tenant <tenant>', 'only this tenant')
    .addOption(nodeStateDirOption("state directory (`ephemera node`'s by default)"))
    .action(async (opts: { tenant?: string; stateDir: string }) => {
      await eachManager(opts, async (t) => void process.stdout.write(await fetchManagerMetrics(opts.stateDir, t)));
    });
}
