import type { Suite } from '../frame';
import { fioSuite } from './fio';
import { functionbenchSuite } from './functionbench';
import { impactSuite } from './impact';
import { mixSuite } from './mix';
import { ordinarySuite } from './ordinary';
import { policySuite } from './policy';
import { overheadSuite } from './overhead';
import { scheduleSuite } from './schedule';
import { sharingSuite } from './sharing';
import { workloadsSuite } from './workloads';

/** Every suite `ephemera bench` knows, by name. */
export const SUITES: readonly Suite[] = [fioSuite, policySuite, scheduleSuite, impactSuite, functionbenchSuite, workloadsSuite, sharingSuite, overheadSuite, mixSuite, ordinarySuite];

export function findSuite(name: string): Suite | undefined {
  return SUITES.find((s) => s.name === name);
}
