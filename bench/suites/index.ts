import type { Suite } from '../frame';
import { fioSuite } from './fio';
import { functionbenchSuite } from './functionbench';
import { impactSuite } from './impact';
import { policySuite } from './policy';
import { scheduleSuite } from './schedule';
import { workloadsSuite } from './workloads';

/** Every suite `ephemera bench` knows, by name. */
export const SUITES: readonly Suite[] = [fioSuite, policySuite, scheduleSuite, impactSuite, functionbenchSuite, workloadsSuite];

export function findSuite(name: string): Suite | undefined {
  return SUITES.find((s) => s.name === name);
}
