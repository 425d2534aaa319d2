/**
 * The policy engine's public surface: every decision of the system as a pure function from a
 * read-only snapshot (see `snapshots.ts`; bytes and milliseconds throughout) to a decision, configured
 * by one zod schema. No I/O except `loadPolicyConfig`.
 */
export {
  HeadroomSchema,
  DEFAULT_POLICY_CONFIG,
  MiB,
  parsePolicyConfig,
  loadPolicyConfig,
  headroomBytes,
  scaled,
  type PolicyConfig,
  type Scoring,
} from './config';
export { PolicyError, type PolicyErrorCode } from './errors';
export type { InodeStat, ContainerProfile, ContainerState, Loan, TenantSnapshot, NodeState, TaskSpec } from './snapshots';
export { decidePlacement, defaultTmpSizeBytes, diskWorkingSetBytes, workingSetExcessBytes } from './placement';
export { planEviction, planPromotion, adaptStore } from './eviction';
export {
  placementAdmission,
  admitsNewFile,
  admitsOpenForWrite,
  planSpill,
  planPromote,
  needsWriteback,
  quietPeriodEndMs,
  shrinkReady,
  type TierBudget,
  type TierSnapshot,
  type MemoryAdmission,
  type SpillDecision,
} from './tiers';
export { classifyContainer, poolScopeKey, scaledDemand } from './pools';
export { planOnStart, planOnDrain, planRetryReturns, undoSteps, applyStep, applyPlan, type LendingStep, type LendingPlan } from './lending';
export { planSafeguard } from './safeguard';
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
} from './scheduler';
export { parseSchedulerTrace, traceTaskToSpec } from './trace';
export { registerPolicyCommands } from './commands';
