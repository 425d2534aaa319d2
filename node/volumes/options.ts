import { z } from 'zod';
import { parseSize } from '../../fusefs/index';
import type { ContainerProfile } from '../../policy/index';
import { VolumeError, errorMessage } from './errors';

/** What `--mount …,volume-opt=K=V` (or `driver_opts` in a compose file) may say, all strings. */
const KNOWN = ['size', 'inodes', 'mem', 'file', 'token', 'tenant'] as const;
const VolumeOpts = z.record(z.string(), z.string()).default({});

export interface VolumeOptions {
  /** Bytes over both tiers; undefined: the driver's default (as under `ephemera node`). */
  sizeQuota: number | undefined;
  inodeQuota: number;
  /** The lending profile when both of mem= and file= (or one, the other 0) were given. */
  profile: ContainerProfile | null;
  token: string | undefined;
  /** The tenant the creator claims: honoured only when the token is that tenant's. */
  claimedTenant: string | undefined;
}

/**
 * Parses the volume's options. An unknown option is an error naming the known ones: a typo must
 * not leave a quota unset.
 */
export function parseVolumeOptions(raw: unknown): VolumeOptions {
  const parsed = VolumeOpts.safeParse(raw ?? {});
  if (!parsed.success) throw new VolumeError('E_BAD_OPTION', 'volume options must be string values (volume-opt=key=value)');
  const opts = parsed.data;
  for (const k of Object.keys(opts)) {
    if (!(KNOWN as readonly string[]).includes(k)) {
      throw new VolumeError('E_BAD_OPTION', `unknown volume option "${k}" (known: ${KNOWN.join(', ')})`);
    }
  }
  const size = (key: string): number | undefined => {
    const v = opts[key];
    if (v === undefined) return undefined;
    try {
      return parseSize(v, `volume-opt=${key}`);
    } catch (e) {
      throw new VolumeError('E_BAD_OPTION', errorMessage(e), e);
    }
  };
  const inodes = opts.inodes;
  if (inodes !== undefined && !/^\d+$/.test(inodes)) throw new VolumeError('E_BAD_OPTION', `volume-opt=inodes: "${inodes}" is not a whole number`);
  const mem = size('mem');
  const file = size('file');
  const sizeQuota = size('size');
  if (sizeQuota === 0) throw new VolumeError('E_BAD_OPTION', 'volume-opt=size: 0 would leave the store no room (omit it for the node default)');
  const token = opts.token;
  if (token !== undefined && token.length === 0) throw new VolumeError('E_TOKEN', 'volume-opt=token is empty');
  return {
    sizeQuota,
    inodeQuota: inodes === undefined ? 0 : Number(inodes),
    profile: mem === undefined && file === undefined ? null : { peakMemoryBytes: mem ?? 0, largestFileBytes: file ?? 0 },
    token,
    claimedTenant: opts.tenant,
  };
}
