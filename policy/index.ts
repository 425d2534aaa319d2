/**
 * The policy engine's public surface: every decision of the system as a pure function from a
 * read-only snapshot (see `snapshots.ts`; bytes and milliseconds throughout) to a decision, configured
 * by one zod schema. No I/O except `loadPolicyConfig`.
 */
export {
  PolicyConfigSchema,
  HeadroomSchema,
  DEFAULT_POLICY_CONFIG,
  MiB,
  parsePolicyConfig,
  loadPolicyConfig,
  headroomBytes,
  scaled,
  type PolicyConfig,
  type PolicyConfigInput,
  type Scoring,
  type PoolScope,
} from './config';
export { PolicyError, type PolicyErrorCode, type PolicyIssue } from './errors';
export type {
  Tier,
  InodeStat,
  StoreSnapshot,
  PlacementRequest,
  ContainerProfile,
  ContainerState,
  Loan,
  TenantSnapshot,
  NodeSpec,
  NodeState,
  TaskSpec,
} from './snapshots';
export {
  decidePlacement,
  defaultTmpSizeBytes,
  inDiskWorkingSet,
  diskWorkingSetBytes,
  workingSetExcessBytes,
  type PlacementDecision,
} from './placement';
export {
  planEviction,
  planPromotion,
  adaptStore,
  type EvictionPlan,
  type EvictionOptions,
  type PromotionPlan,
  type PromotionOptions,
  type AdaptDecision,
} from './eviction';
export {
  placementAdmission,
  admitsNewFile,
  admitsOpenForWrite,
  sharedBudgetBytes,
  planSpill,
  planPromote,
  needsWriteback,
  quietPeriodEndMs,
  shrinkReady,
  type TierBudget,
  type TierSnapshot,
  type MemoryAdmission,
  type SpillDecision,
  type PromoteDecision,
} from './tiers';
export { classifyContainer, poolScopeKey, scaledDemand, spareBytes, needBytes, type Pool } from './pools';
export {
  planOnStart,
  planOnDrain,
  planRetryReturns,
  undoSteps,
  applyStep,
  applyPlan,
  minimumLimitFor,
  type LendingStep,
  type LendingPlan,
  type LendingTrigger,
  type PendingReturn,
} from './lending';
export { planSafeguard, alarmNeedBytes, type MemoryAlarm, type SafeguardDecision } from './safeguard';
export {
  fits,
  scoreNode,
  betterScore,
  chooseNodeLinear,
  LinearCluster,
  IndexedCluster,
  createCluster,
  scheduleTasks,
  type Cluster,
  type CandidateScore,
  type ScheduleResult,
} from './scheduler';
export { parseSchedulerTrace, traceTaskToSpec, type TraceTask } from './trace';
export { registerPolicyCommands } from './commands';
