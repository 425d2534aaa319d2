import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import {
  LinkClient,
  managerSocketPath,
  managersDir,
  readTenantToken,
  ToManager,
  ToMount,
  type EndpointInput,
  type ManagerStatus,
  type ToManagerMessage,
  type ToMountMessage,
} from '../link/index';
import { ManagerError } from './errors';

type ControlReply<T extends ToMountMessage['type']> = Extract<ToMountMessage, { type: T }>;

/** One request/reply with a manager over its socket, as a `control` peer with the tenant's token. */
async function askManager<T extends ToMountMessage['type']>(
  stateDir: string,
  tenant: string,
  request: ToManagerMessage['type'] & ('status' | 'metrics'),
  replyType: T,
  endpoint: EndpointInput | undefined,
  timeoutMs: number,
): Promise<ControlReply<T>> {
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
    const reply = client.waitFor((m) => m.type === replyType && 'requestId' in m && m.requestId === requestId, timeoutMs);
    client.send({ type: request, requestId });
    const m = await reply;
    if (m.type !== replyType) throw new ManagerError('E_NO_MANAGER', 'unexpected reply');
    return m as ControlReply<T>;
  } finally {
    await client.close();
  }
}

/** Reads one manager's state over its socket. */
export async function fetchManagerStatus(stateDir: string, tenant: string, endpoint?: EndpointInput, timeoutMs = 3_000): Promise<ManagerStatus> {
  return (await askManager(stateDir, tenant, 'status', 'status-reply', endpoint, timeoutMs)).status;
}

/** One manager's Prometheus metrics (text exposition format) over its socket. */
export async function fetchManagerMetrics(stateDir: string, tenant: string, endpoint?: EndpointInput, timeoutMs = 3_000): Promise<string> {
  return (await askManager(stateDir, tenant, 'metrics', 'metrics-reply', endpoint, timeoutMs)).text;
}

/** Tenants with a manager socket under the state dir. */
export async function listManagerTenants(stateDir: string): Promise<string[]> {
  try {
    return (await readdir(managersDir(stateDir))).filter((f) => f.endsWith('.sock')).map((f) => f.slice(0, -'.sock'.length)).sort();
  } catch {
    return [];
  }
}
