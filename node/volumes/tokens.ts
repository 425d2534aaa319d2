import * as fs from 'node:fs';
import * as path from 'node:path';
import { assertTenantName, ensureTenantToken, readTenantToken, tokensEqual } from '../../link/index';
import { VolumeError } from './errors';

/**
 * Volume tokens: one per tenant, made by the operator (`ephemera volume-token create --tenant T`)
 * and handed to whoever starts that tenant's containers, who passes it as `volume-opt=token=…`.
 * They live apart from the tenant managers' link tokens (a container's creator must never be able
 * to speak for a mount on the manager's link), in the same format, 0600, compared in constant time.
 */
export function volumeTokenDir(stateDir: string): string {
  return path.join(stateDir, 'volume-tokens');
}

export function ensureVolumeToken(stateDir: string, tenant: string): Promise<string> {
  assertTenantName(tenant);
  return ensureTenantToken(volumeTokenDir(stateDir), tenant);
}

/**
 * The tenant a presented token belongs to. Every tenant's token is compared (no early exit on a
 * match), so timing tells nothing about which tenant's token was close.
 */
export async function tenantOfVolumeToken(stateDir: string, presented: string): Promise<string | undefined> {
  const dir = path.join(volumeTokenDir(stateDir), 'tokens');
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.token'));
  } catch {
    return undefined;
  }
  let found: string | undefined;
  for (const name of names.sort()) {
    const tenant = name.slice(0, -'.token'.length);
    let expected: string;
    try {
      expected = await readTenantToken(volumeTokenDir(stateDir), tenant);
    } catch (e) {
      // A token file readable by others is not trusted; say so rather than silently skip it.
      throw new VolumeError('E_TOKEN', `volume token of tenant ${tenant} is unusable: ${(e as Error).message}`);
    }
    if (tokensEqual(presented, expected) && found === undefined) found = tenant;
  }
  return found;
}
