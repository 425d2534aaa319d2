import type { PolicyConfig } from '../../policy/index';
import type { MemoryAdapter } from '../adapter';
import type { EphemeraMount } from '../mount';
import { DaemonError } from './errors';

export interface AdapterSettings {
  sizeHint: number | null;
  oomPause: boolean;
}

/**
 * Ties a mount to its container's memory cgroup: from then on the memory adapter (fusefs/adapter.ts)
 * owns placement and the tiers of that mount, and the daemon's budget keeper stands down.
 */
export async function attachMemoryAdapter(
  mount: EphemeraMount,
  cgroupPath: string,
  policy: PolicyConfig,
  settings: AdapterSettings = { sizeHint: null, oomPause: false },
): Promise<MemoryAdapter> {
  try {
    return await mount.attachAdapter({ cgroupPath, policy, sizeHintBytes: settings.sizeHint, oomPause: settings.oomPause });
  } catch (e) {
    throw new DaemonError('E_NO_CGROUP', `cannot attach the memory cgroup ${cgroupPath}: ${(e as Error).message}`);
  }
}
