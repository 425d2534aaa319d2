/**
 * The memory adapter's cgroup side: reading and steering a container's memory cgroup, noticing
 * changes, charging promotions to the container, and the OOM emergency stop. The store wires these
 * to its tiers; nothing here knows about inodes.
 */
export { MemoryAdapterError, isMemoryAdapterError, type MemoryErrorCode } from './errors';
export {
  MemoryCgroup,
  findCgroupMounts,
  parseProcCgroup,
  parseFlatKeyed,
  type CgroupVersion,
  type CgroupMounts,
  type CgroupResolveOptions,
  type MemoryUsage,
  type OomState,
} from './cgroup';
export {
  DEFAULT_HEADROOM,
  HeadroomConfigSchema,
  headroomBytes,
  parseHeadroomConfig,
  roomBelowMark,
  usageMark,
  type HeadroomConfig,
  type HeadroomConfigInput,
} from './headroom';
export {
  CgroupWatcher,
  type CgroupWatch,
  type CgroupWatcherEvents,
  type CgroupWatcherOptions,
  type LimitChange,
  type OomKillEvent,
  type ThrottleEvent,
  type UnderOomEvent,
  type UsageSample,
  type WatchFailure,
  type WatchOptions,
} from './watcher';
export { ChargedCopier, type ChargedCopierOptions, type CopyOptions } from './charged-copy';
export { OomGuard, type OomAlarm, type OomGuardEvents, type OomGuardOptions } from './oom-guard';
