import { createHash } from 'node:crypto';
import path from 'node:path';
import { assertTenantName } from '../link/index';

/** sun_path holds 108 bytes with the terminating NUL: a Unix socket path is at most 107. */
const SOCKET_PATH_MAX = 107;

/**
 * The manager of `tenant` listens here unless told otherwise (a Unix socket, mode 0600), and a
 * mount finds it here. A state dir too deep for a socket path gets a short path derived from it
 * (the same on both ends of the link) under /run/ephemera/sockets.
 */
export function managerSocketPath(stateDir: string, tenant: string): string {
  assertTenantName(tenant);
  const natural = path.join(stateDir, 'managers', `${tenant}.sock`);
  if (Buffer.byteLength(natural) <= SOCKET_PATH_MAX) return natural;
  const id = createHash('sha256').update(`${path.resolve(stateDir)}\0${tenant}`).digest('hex').slice(0, 24);
  return path.join('/run/ephemera/sockets', `${id}.sock`);
}

export function managersDir(stateDir: string): string {
  return path.join(stateDir, 'managers');
}
