import type { MoveResult, MoveTicket, NativeInodeStat, NativeMountInfo, NativeUsage, PlacementRule, TierName } from './native';

/**
 * What the tier keeper and the cgroup budget use of a mount: its store's two tiers, moves and
 * placement. EphemeraMount implements it; naming it here keeps mount.ts, tier-keeper.ts and
 * cgroup-budget.ts free of an import cycle (the mount owns its keeper, the keeper its budget).
 */
export interface TieredStore {
  readonly mode: NativeMountInfo['mode'];
  usage(): NativeUsage;
  inodeStats(): NativeInodeStat[];
  setPlacement(rule: PlacementRule): void;
  moveNow(ino: number, to: TierName): Promise<MoveResult>;
  beginMove(ino: number, to: TierName): MoveTicket;
  commitMove(token: number): number;
  abortMove(token: number): void;
  onClose(cb: ((ino: number, bytes: number, tier: TierName) => void) | null): void;
  tierBytes(): { memory: number; disk: number };
  setChargeAgent(agent: { helper: string; cgroupDir: string }): void;
  syncDiskTier(): Promise<number>;
}

/** The keeper's counters, per budget source (a new source starts at 0). */
export interface KeeperTotals {
  spills: number;
  spilledBytes: number;
  promotions: number;
  promotedBytes: number;
  moveErrors: number;
  alarms: number;
  writebacks: number;
}
