import type { Suite } from '../frame';
import { fioSuite } from './fio';
import { policySuite } from './policy';

/** Every suite `ephemera bench` knows, by name. */
export const SUITES: readonly Suite[] = [fioSuite, policySuite];

export function findSuite(name: string): Suite | undefined {
  return SUITES.find((s) => s.name === name);
}
