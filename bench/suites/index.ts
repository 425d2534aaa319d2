import type { Suite } from '../frame';
import { fioSuite } from './fio';

/** Every suite `ephemera bench` knows, by name. */
export const SUITES: readonly Suite[] = [fioSuite];

export function findSuite(name: string): Suite | undefined {
  return SUITES.find((s) => s.name === name);
}
