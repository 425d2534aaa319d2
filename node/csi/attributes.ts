import { parseSize } from '../../fusefs/index';
import type { ContainerProfile } from '../../policy/index';
import { errorMessage, invalid } from './errors';

/** What kubelet adds to an inline volume's context (podInfoOnMount, ephemeral). */
export const K8S_EPHEMERAL = 'csi.storage.k8s.io/ephemeral';
export const K8S_POD_UID = 'csi.storage.k8s.io/pod.uid';
export const K8S_POD_NAME = 'csi.storage.k8s.io/pod.name';
export const K8S_POD_NAMESPACE = 'csi.storage.k8s.io/pod.namespace';
const K8S_PREFIX = 'csi.storage.k8s.io/';

/** Bytes from a Kubernetes quantity (64Mi, 1Gi) or a size as the CLI writes it (64M, 1G: binary too). */
export function parseQuantity(text: string, what: string): number {
  return parseSize(text.replace(/^(\s*\d+(?:\.\d+)?\s*[KkMmGg])i\s*$/, '$1iB'), what);
}

/** Ours: a pod's `csi.volumeAttributes`. */
const KNOWN = ['size', 'inodes', 'mem', 'file', 'tenant'] as const;

export interface InlineVolume {
  podUid: string;
  podName: string;
  podNamespace: string;
  /** Bytes over both tiers; undefined: the driver's default. */
  sizeQuota: number | undefined;
  inodeQuota: number;
  /** From mem=/file= (as the Docker driver's volume-opt): the lending profile; file= is also the adapter's size hint. */
  profile: ContainerProfile | null;
  /** What the pod claims; honoured only when the namespace map says the same. */
  claimedTenant: string | undefined;
}

/**
 * Reads the volume context of an ephemeral inline volume. kubelet's own keys must be there (the
 * CSIDriver object needs `podInfoOnMount: true`); an attribute we do not know is refused, since a
 * typo must not leave a quota unset.
 */
export function parseInlineVolume(ctx: Record<string, string>): InlineVolume {
  if (ctx[K8S_EPHEMERAL] !== 'true') {
    throw invalid(`volume_context["${K8S_EPHEMERAL}"] is ${JSON.stringify(ctx[K8S_EPHEMERAL] ?? null)}: this driver serves ephemeral inline volumes only (CSIDriver volumeLifecycleModes: [Ephemeral]; kubelet sets the key only with podInfoOnMount: true)`);
  }
  const need = (key: string): string => {
    const v = ctx[key];
    if (!v) throw invalid(`volume_context["${key}"] is missing: the CSIDriver object needs podInfoOnMount: true`);
    return v;
  };
  const podUid = need(K8S_POD_UID);
  const podName = need(K8S_POD_NAME);
  const podNamespace = need(K8S_POD_NAMESPACE);
  for (const k of Object.keys(ctx)) {
    if (k.startsWith(K8S_PREFIX)) continue;
    if (!(KNOWN as readonly string[]).includes(k)) throw invalid(`volumeAttributes: unknown attribute "${k}" (known: ${KNOWN.join(', ')})`);
  }
  const size = (key: string): number | undefined => {
    const v = ctx[key];
    if (v === undefined) return undefined;
    try {
      return parseQuantity(v, `volumeAttributes.${key}`);
    } catch (e) {
      throw invalid(errorMessage(e));
    }
  };
  const sizeQuota = size('size');
  if (sizeQuota === 0) throw invalid('volumeAttributes.size: 0 would leave the store no room (omit it for the driver default)');
  const inodes = ctx.inodes;
  if (inodes !== undefined && !/^\d+$/.test(inodes)) throw invalid(`volumeAttributes.inodes: "${inodes}" is not a whole number`);
  const mem = size('mem');
  const file = size('file');
  const claimed = ctx.tenant;
  if (claimed === '') throw invalid('volumeAttributes.tenant is empty');
  return {
    podUid,
    podName,
    podNamespace,
    sizeQuota,
    inodeQuota: inodes === undefined ? 0 : Number(inodes),
    profile: mem === undefined && file === undefined ? null : { peakMemoryBytes: mem ?? 0, largestFileBytes: file ?? 0 },
    claimedTenant: claimed,
  };
}
