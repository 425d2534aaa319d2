import type { ContainerProfile } from '../policy/index';

/**
 * Docker labels are fixed at creation, so whoever creates a managed container (the node, or a test)
 * puts these in the spec's `labels`; a restarted manager rebuilds its pool from them.
 */
export const LABEL_TENANT = 'ephemera.tenant';
export const LABEL_FUNCTION = 'ephemera.function';
export const LABEL_WORKFLOW = 'ephemera.workflow';
export const LABEL_INITIAL_LIMIT = 'ephemera.limit.initial';
export const LABEL_PROFILE_PEAK = 'ephemera.profile.peak';
export const LABEL_PROFILE_FILE = 'ephemera.profile.file';

export function managerLabels(initialLimitBytes: number, profile: ContainerProfile | null): Record<string, string> {
  const labels: Record<string, string> = { [LABEL_INITIAL_LIMIT]: String(initialLimitBytes) };
  if (profile) {
    labels[LABEL_PROFILE_PEAK] = String(profile.peakMemoryBytes);
    labels[LABEL_PROFILE_FILE] = String(profile.largestFileBytes);
  }
  return labels;
}

function bytesLabel(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,16}$/.test(value)) return undefined;
  return Number(value);
}

/** Reads back what `managerLabels` wrote; missing or unreadable values come back undefined/null. */
export function parseManagerLabels(labels: Record<string, string>): { initialLimitBytes: number | undefined; profile: ContainerProfile | null } {
  const peak = bytesLabel(labels[LABEL_PROFILE_PEAK]);
  const file = bytesLabel(labels[LABEL_PROFILE_FILE]);
  return {
    initialLimitBytes: bytesLabel(labels[LABEL_INITIAL_LIMIT]),
    profile: peak !== undefined && file !== undefined ? { peakMemoryBytes: peak, largestFileBytes: file } : null,
  };
}
