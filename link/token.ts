import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { LinkError, errorMessage } from './errors';

/** Tenant names become file names: keep them to a safe alphabet. */
const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function assertTenantName(tenant: string): void {
  if (!TENANT_NAME.test(tenant)) {
    throw new LinkError('E_BAD_CONFIG', `tenant name ${JSON.stringify(tenant)} must match ${TENANT_NAME.source}`);
  }
}

export function tokenPath(stateDir: string, tenant: string): string {
  assertTenantName(tenant);
  return path.join(stateDir, 'tokens', `${tenant}.token`);
}

/**
 * The tenant's link token: 32 random bytes (hex), created once in a 0600 file under the state dir
 * and reused afterwards, so a restarted manager and its mounts agree without any exchange. A file
 * readable by others is refused rather than trusted.
 */
export async function ensureTenantToken(stateDir: string, tenant: string): Promise<string> {
  const file = tokenPath(stateDir, tenant);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await chmod(path.dirname(file), 0o700);
  try {
    // `wx`: two processes racing to create the token must not both win.
    const handle = await open(file, 'wx', 0o600);
    try {
      await handle.writeFile(`${randomBytes(32).toString('hex')}\n`);
    } finally {
      await handle.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new LinkError('E_TOKEN', `creating the token file for tenant ${tenant}: ${errorMessage(err)}`, err);
    }
  }
  return readTenantToken(stateDir, tenant);
}

/** Reads an existing token; E_TOKEN when absent, empty or not private to its owner. */
export async function readTenantToken(stateDir: string, tenant: string): Promise<string> {
  const file = tokenPath(stateDir, tenant);
  let text: string;
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) {
      throw new LinkError('E_TOKEN', `token file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); expected 0600`);
    }
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof LinkError) throw err;
    throw new LinkError('E_TOKEN', `reading the token of tenant ${tenant}: ${errorMessage(err)}`, err);
  }
  const token = text.trim();
  if (!/^[0-9a-f]{64}$/.test(token)) throw new LinkError('E_TOKEN', `token file ${file} does not hold a token`);
  return token;
}

/**
 * Constant-time comparison. Hashing first makes both sides the same length, so neither the content
 * nor the length of the expected token leaks through timing.
 */
export function tokensEqual(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}
