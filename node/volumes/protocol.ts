/**
 * Docker's volume plugin protocol (v1, legacy plugins): JSON over HTTP POST on a Unix socket under
 * /run/docker/plugins. Every request body is one of these; a reply is JSON, an error `{"Err": "…"}`.
 * Docker sends fields we do not use (e.g. future ones), so objects are not strict here, unlike our
 * own control messages: refusing them would break on a newer dockerd.
 */
import { z } from 'zod';

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';

/** Docker's own rule for volume names (daemon/names), so every name Docker makes is accepted. */
const VolumeName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/, 'a Docker volume name ([A-Za-z0-9][A-Za-z0-9_.-]*)');
/** The per-caller mount id Docker generates for each container's use of a volume. */
const CallerId = z.string().min(1).max(256);

export const CreateRequest = z.object({ Name: VolumeName, Opts: z.record(z.string(), z.string()).nullable().optional() });
export const NameRequest = z.object({ Name: VolumeName });
export const MountRequest = z.object({ Name: VolumeName, ID: CallerId });

export type CreateRequest = z.infer<typeof CreateRequest>;
export type MountRequest = z.infer<typeof MountRequest>;

/** What Get and List describe; Status shows in `docker volume inspect`. */
export interface VolumeInfo {
  Name: string;
  Mountpoint: string;
  CreatedAt?: string;
  Status?: Record<string, unknown>;
}

export type PluginReply = Record<string, unknown>;

/** The endpoints, each to the request schema it takes (null: no body). */
export const ENDPOINTS = {
  '/Plugin.Activate': null,
  '/VolumeDriver.Capabilities': null,
  '/VolumeDriver.List': null,
  '/VolumeDriver.Create': CreateRequest,
  '/VolumeDriver.Remove': NameRequest,
  '/VolumeDriver.Path': NameRequest,
  '/VolumeDriver.Get': NameRequest,
  '/VolumeDriver.Mount': MountRequest,
  '/VolumeDriver.Unmount': MountRequest,
} as const;
export type Endpoint = keyof typeof ENDPOINTS;
