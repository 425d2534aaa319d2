import { createContainerSuite, type ContainerCase } from '../container-suite';
import { SINGLE_CONTAINER_TARGETS } from '../container-targets';
import { PAYLOAD_DIR } from '../payload';

/**
 * Ordinary programs whose files outgrow the container's memory after a reopen (Store v2): a log
 * closed, reopened and appended to 1 MiB at a time, and an sqlite database created, closed,
 * reopened and grown past the limit, each in a 128 MiB container. tmpfs is OOM-killed; Ephemera
 * must finish with 0 kills within 1.5× overlay's time (a copy of the whole file at every reopen
 * would not). One invocation per fresh container (cold only: the second would find the files).
 */
const PROGRAM = `${PAYLOAD_DIR}/ordinary.py`;

export function ordinaryCases(quick: boolean): ContainerCase[] {
  const mib = quick ? 160 : 200;
  return [
    {
      workload: 'append-after-reopen',
      parameters: { primary: 'seconds', mib, limit_mib: 128 },
      image: 'function',
      memoryMiB: 128,
      argv: ['python3', PROGRAM, 'append', '/tmp', String(mib), '8'],
      phases: ['cold'],
      timeoutMs: 180_000,
    },
    {
      workload: 'sqlite-reopen-grow',
      parameters: { primary: 'seconds', mib: 150, limit_mib: 128 },
      image: 'function',
      memoryMiB: 128,
      argv: ['python3', PROGRAM, 'sqlite', '/tmp', '150'],
      phases: ['cold'],
      timeoutMs: 180_000,
    },
  ];
}

export const ordinarySuite = createContainerSuite({
  name: 'ordinary',
  description: 'ordinary programs past memory after a reopen: log append, sqlite reopen-and-grow (128 MiB containers)',
  defaultTimeCapS: { quick: 300, full: 900 },
  defaultPasses: { quick: 1, full: 3 },
  defaultTargets: SINGLE_CONTAINER_TARGETS,
  images: ['function'],
  cases: ordinaryCases,
});
