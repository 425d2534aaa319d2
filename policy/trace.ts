import { MiB } from './config';
import { PolicyError } from './errors';
import type { TaskSpec } from './snapshots';

/** One line of the original's scheduler trace, in MB as written. */
export interface TraceTask {
  readonly name: string;
  readonly limitMb: number;
  readonly memMb: number;
  readonly fileMb: number;
}

const NUMBER = /^(0|[1-9][0-9]*)(\.[0-9]+)?$/;

/**
 * Parses the original's trace format (input_tenant_scheduler.txt): `name limit_mb mem_mb file_mb` per
 * line, whitespace-separated. Blank lines and `#` comments are skipped. The first malformed line raises
 * E_BAD_TRACE naming its 1-based number and the reason.
 */
export function parseSchedulerTrace(text: string, source = 'trace'): TraceTask[] {
  const tasks: TraceTask[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const fail = (reason: string): never => {
      throw new PolicyError('E_BAD_TRACE', `${source}:${i + 1}: ${reason}: ${JSON.stringify(raw)}`, [
        { path: `line ${i + 1}`, reason },
      ]);
    };
    const fields = line.split(/\s+/);
    if (fields.length !== 4) fail(`expected 4 fields (name limit_mb mem_mb file_mb), found ${fields.length}`);
    const [name, ...numbers] = fields as [string, string, string, string];
    const labels = ['limit_mb', 'mem_mb', 'file_mb'];
    const values = numbers.map((field, k) => {
      if (!NUMBER.test(field)) fail(`${labels[k]} must be a non-negative number, got ${JSON.stringify(field)}`);
      return Number(field);
    });
    const [limitMb, memMb, fileMb] = values as [number, number, number];
    if (limitMb <= 0) fail('limit_mb must be > 0');
    tasks.push({ name, limitMb, memMb, fileMb });
  });
  return tasks;
}

/** T_lim = limit, T_mem = mem + file (raw, no safety factor, as the original), converted to bytes. */
export function traceTaskToSpec(task: TraceTask): TaskSpec {
  return {
    id: task.name,
    limitBytes: Math.round(task.limitMb * MiB),
    memBytes: Math.round((task.memMb + task.fileMb) * MiB),
  };
}
