import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { assertTenantName } from '../../link/index';
import { parseQuantity } from './attributes';
import { EphemeraError } from '../../errors/index';
import { errorMessage } from './errors';

/** The CSIDriver object's name: kubelet calls the plugin by it, pods name it in `csi.driver`. */
export const DEFAULT_DRIVER_NAME = 'tmp.csi.ephemera.io';
/** Where kubelet looks for registration sockets, and where drivers keep their CSI socket. */
export const KUBELET_REGISTRY_DIR = '/var/lib/kubelet/plugins_registry';
export const KUBELET_PLUGINS_DIR = '/var/lib/kubelet/plugins';
/** cgroup v1 memory hierarchy: kubelet's pod cgroups are under `kubepods/` (or `kubepods.slice/`) here. */
export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup/memory';

// A CSI driver name: at most 63 characters, alphanumeric at both ends, dashes and dots between (spec).
const DriverName = z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/, 'a CSI driver name: 1-63 of [A-Za-z0-9.-], alphanumeric at both ends');
const Size = z.union([z.number().int().positive(), z.string().min(1)]);

/** The operator's file (`ephemera node --csi-config FILE`). Unknown keys are errors: a typo must not drop a binding. */
export const CsiConfigSchema = z
  .object({
    driverName: DriverName.default(DEFAULT_DRIVER_NAME),
    /** NodeGetInfo's node_id; default $NODE_NAME (the DaemonSet sets it from spec.nodeName), else the host name. */
    nodeId: z.string().min(1).max(256).optional(),
    /**
     * Namespace → tenant: the only source of a volume's tenant. A namespace mapped to null gets a
     * /tmp without a tenant; a namespace not listed gets none.
     */
    namespaces: z.record(z.string().min(1), z.string().nullable()),
    /** A volume's size quota when its attributes give no `size` (default: the node's --tmp-size). */
    defaultSize: Size.optional(),
    /** The memory hierarchy holding kubelet's pod cgroups (tests point it at a cgroup of their own). */
    cgroupRoot: z.string().startsWith('/').default(DEFAULT_CGROUP_ROOT),
    /** Default `<plugins dir>/<driverName>/csi.sock`. */
    csiSocket: z.string().startsWith('/').optional(),
    /** Default /var/lib/kubelet/plugins_registry; the socket is `<dir>/<driverName>-reg.sock`. */
    registrationDir: z.string().startsWith('/').default(KUBELET_REGISTRY_DIR),
  })
  .strict();

/** A config the driver cannot start with; the CLI prints the code and the message. */
export class CsiConfigError extends EphemeraError<'E_BAD_CONFIG'> {
  constructor(message: string, cause?: unknown) {
    super('E_BAD_CONFIG', message, { cause });
  }
}

export interface CsiConfig {
  driverName: string;
  nodeId: string;
  namespaces: Record<string, string | null>;
  defaultSizeBytes: number | undefined;
  cgroupRoot: string;
  csiSocket: string;
  registrationSocket: string;
}

/** Validates a parsed config object; every problem is named with its key. */
export function parseCsiConfig(raw: unknown, where = 'CSI config'): CsiConfig {
  const r = CsiConfigSchema.safeParse(raw);
  if (!r.success) {
    const detail = r.error.issues.map((i) => `${i.path.map(String).join('.') || '(top)'}: ${i.message}`).join('; ');
    throw new CsiConfigError(`${where}: ${detail}`);
  }
  const c = r.data;
  for (const [ns, tenant] of Object.entries(c.namespaces)) {
    if (tenant === null) continue;
    try {
      assertTenantName(tenant);
    } catch (e) {
      throw new CsiConfigError(`${where}: namespaces.${ns}: ${errorMessage(e)}`);
    }
  }
  let defaultSizeBytes: number | undefined;
  if (c.defaultSize !== undefined) {
    try {
      defaultSizeBytes = typeof c.defaultSize === 'number' ? c.defaultSize : parseQuantity(c.defaultSize, 'defaultSize');
    } catch (e) {
      throw new CsiConfigError(`${where}: ${errorMessage(e)}`);
    }
    if (defaultSizeBytes <= 0) throw new CsiConfigError(`${where}: defaultSize must be more than 0`);
  }
  return {
    driverName: c.driverName,
    nodeId: c.nodeId ?? (process.env.NODE_NAME || hostname()),
    namespaces: c.namespaces,
    defaultSizeBytes,
    cgroupRoot: c.cgroupRoot,
    csiSocket: c.csiSocket ?? path.join(KUBELET_PLUGINS_DIR, c.driverName, 'csi.sock'),
    registrationSocket: path.join(c.registrationDir, `${c.driverName}-reg.sock`),
  };
}

export function loadCsiConfig(file: string): CsiConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CsiConfigError(`cannot read the CSI config ${file}: ${errorMessage(e)}`);
  }
  return parseCsiConfig(raw, file);
}
