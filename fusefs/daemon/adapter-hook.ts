import type { EventEmitter } from 'node:events';
import type { PolicyConfig } from '../../policy/index';
import { DaemonError } from './errors';
import type { EphemeraMount } from '../mount';

/** The part of the lead's MemoryAdapter (fusefs/adapter.ts) the daemon uses. */
export interface AttachedAdapter extends EventEmitter {
  start(): Promise<void> | void;
  close(): Promise<void> | void;
  requestShrink(targetLimit: number): Promise<unknown> | unknown;
}

type AdapterCtor = new (mount: EphemeraMount, options: { cgroupPath: string; policy?: PolicyConfig }) => AttachedAdapter;

/**
 * Ties a mount to its container's memory cgroup. Kept behind this one function because the memory
 * adapter is written beside this daemon: the module is looked up at run time, and when this build
 * has none the add-mount fails with E_NO_ADAPTER (nothing is mounted), never silently unaccounted.
 */
export async function attachMemoryAdapter(mount: EphemeraMount, cgroupPath: string, policy: PolicyConfig): Promise<AttachedAdapter> {
  let Ctor: AdapterCtor | undefined;
  for (const candidate of ['../adapter', '../memory/adapter']) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(candidate) as { MemoryAdapter?: AdapterCtor };
      if (typeof mod.MemoryAdapter === 'function') {
        Ctor = mod.MemoryAdapter;
        break;
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  if (!Ctor) throw new DaemonError('E_NO_ADAPTER', 'this build has no memory adapter (fusefs/adapter.ts): cannot attach a cgroup');
  const adapter = new Ctor(mount, { cgroupPath, policy });
  await adapter.start();
  return adapter;
}
