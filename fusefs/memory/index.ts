/**
 * The memory adapter's cgroup side: reading and steering a container's memory cgroup, noticing
 * changes, charging promotions to the container, and the OOM emergency stop. The store wires these
 * to its tiers; nothing here knows about inodes.
 */
export { MemoryCgroupError, isMemoryCgroupError, type MemoryErrorCode } from './errors';
export { MemoryCgroup, findCgroupMounts, parseProcCgroup } from './cgroup';
export {
  DEFAULT_HEADROOM,
  headroomBytes,
  parseHeadroomConfig,
  roomBelowMark,
  usageMark,
  type HeadroomConfig,
  type HeadroomConfigInput,
} from './headroom';
export { CgroupWatcher, type CgroupWatch, type LimitChange } from './watcher';
export { ChargedCopier } from './charged-copy';
export { OomGuard, type OomAlarm } from './oom-guard';
