import path from 'node:path';
import { assertTenantName } from '../link/index';

/** The manager of `tenant` listens here unless told otherwise (a Unix socket, mode 0600). */
export function managerSocketPath(stateDir: string, tenant: string): string {
  assertTenantName(tenant);
  return path.join(stateDir, 'managers', `${tenant}.sock`);
}

export function managersDir(stateDir: string): string {
  return path.join(stateDir, 'managers');
}
