import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { LinkClient, readTenantToken, type EndpointInput } from '../link/index';
import { ManagerError } from './errors';
import { ToManager, ToMount, type ManagerStatus, type ToManagerMessage, type ToMountMessage } from './messages';
import { managerSocketPath, managersDir } from './paths';

/** Reads one manager's state over its socket, as a `control` peer with the tenant's token. */
export async function fetchManagerStatus(stateDir: string, tenant: string, endpoint?: EndpointInput, timeoutMs = 3_000): Promise<ManagerStatus> {
  const token = await readTenantToken(stateDir, tenant);
  const client = new LinkClient<ToMountMessage, ToManagerMessage>({
    endpoint: endpoint ?? { socketPath: managerSocketPath(stateDir, tenant) },
    tenant,
    token,
    role: 'control',
    inbound: ToMount,
    outbound: ToManager,
    reconnect: false,
    connectTimeoutMs: timeoutMs,
    onMessage: () => undefined,
  });
  try {
    await client.start();
  } catch (err) {
    throw new ManagerError('E_NO_MANAGER', `no manager of tenant ${tenant} answers: ${(err as Error).message}`, undefined, err);
  }
  try {
    const requestId = randomUUID();
    const reply = client.waitFor((m) => m.type === 'status-reply' && m.requestId === requestId, timeoutMs);
    client.send({ type: 'status', requestId });
    const m = await reply;
    if (m.type !== 'status-reply') throw new ManagerError('E_NO_MANAGER', 'unexpected reply');
    return m.status;
  } finally {
    await client.close();
  }
}

/** Tenants with a manager socket under the state dir. */
export async function listManagerTenants(stateDir: string): Promise<string[]> {
  try {
    return (await readdir(managersDir(stateDir))).filter((f) => f.endsWith('.sock')).map((f) => f.slice(0, -'.sock'.length)).sort();
  } catch {
    return [];
  }
}
