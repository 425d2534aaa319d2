import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { DEFAULT_POLICY_CONFIG, loadPolicyConfig, MiB, type Scoring } from './config';
import { PolicyError } from './errors';
import { errorMessage } from '../errors/index';
import { createCluster, IndexedCluster, LinearCluster, scheduleTasks, type Cluster } from './scheduler';
import type { NodeSpec } from './snapshots';
import { parseSchedulerTrace, traceTaskToSpec } from './trace';

function parseNodes(text: string): NodeSpec[] {
  const fields = text.split(',').map((f) => f.trim());
  return fields.map((field, i) => {
    if (!/^[1-9][0-9]*$/.test(field)) {
      throw new PolicyError('E_BAD_ARGS', `--nodes: entry ${i + 1} must be a positive whole number of MB, got ${JSON.stringify(field)}`);
    }
    return { id: `node${i + 1}`, limitBytes: Number(field) * MiB };
  });
}

/** Bytes back to MB for output; the trace was whole MB, so these are whole unless the trace had fractions. */
function toMb(bytes: number): number {
  return Math.round((bytes / MiB) * 1000) / 1000;
}

interface ScheduleOptions {
  trace: string;
  scoring?: Scoring;
  nodes: string;
  config?: string;
  engine: 'auto' | 'linear' | 'indexed';
}

/** Registers this layer's `ephemera` subcommands. */
export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('Policy engine: pure placement, lending and scheduling decisions');

  policy
    .command('schedule')
    .description(
      'Replay a scheduler trace (`name limit_mb mem_mb file_mb` per line, T_mem = mem + file) on simulated nodes; prints JSON',
    )
    .requiredOption('--trace <file>', 'trace file in the original format')
    .addOption(
      new Option('--scoring <scoring>', 'node scoring (default: the config\'s, complementarity)').choices([
        'complementarity',
        'min-gap',
        'most-free',
      ]),
    )
    .option('--nodes <mb,...>', 'node capacities N_lim in MB, comma-separated', '1024,1024')
    .option('--config <file>', 'policy configuration (JSON or YAML)')
    .addOption(
      new Option('--engine <engine>', 'scheduler engine; both choose identically').choices(['auto', 'linear', 'indexed']).default('auto'),
    )
    .action((options: ScheduleOptions) => {
      const config = options.config ? loadPolicyConfig(options.config) : DEFAULT_POLICY_CONFIG;
      const nodes = parseNodes(options.nodes);
      let text: string;
      try {
        text = readFileSync(options.trace, 'utf8');
      } catch (err) {
        throw new PolicyError('E_BAD_ARGS', `--trace: cannot read ${options.trace}: ${errorMessage(err)}`);
      }
      const tasks = parseSchedulerTrace(text, options.trace).map(traceTaskToSpec);
      const scoring = options.scoring ?? config.scheduler.scoring;
      const cluster: Cluster =
        options.engine === 'linear'
          ? new LinearCluster(nodes)
          : options.engine === 'indexed'
            ? new IndexedCluster(nodes)
            : createCluster(nodes, config.scheduler.indexedFromNodes);
      const result = scheduleTasks(nodes, tasks, scoring, cluster);
      const output = {
        scoring,
        nodes: result.nodes.map((n) => ({
          node: n.id,
          limit_mb: toMb(n.limitBytes),
          alloc_mb: toMb(n.allocBytes),
          req_mb: toMb(n.reqBytes),
          tasks: n.tasks,
        })),
        unplaced: result.unplaced,
      };
      process.stdout.write(JSON.stringify(output, null, 2) + '\n');
    });
}
