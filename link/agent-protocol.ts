import { z } from 'zod';
import { messageSet } from './messages';

/**
 * The agent ⇄ controller messages, carried by a link (`LinkHost` at `AGENT_PATH` on the
 * controller's HTTP port, `LinkClient` in the agent): the link authenticates the agent (hello with
 * the agent token), keeps both ends' heartbeat and answers an invalid frame with an error reply,
 * never applying it. After the link's welcome the agent registers (`register`, answered by
 * `registered`); anything else before that is refused (E_PROTOCOL).
 *
 * Sizes are bytes, times milliseconds. `T_lim` = `limitBytes`, `T_mem` = `memBytes`.
 */

/** The WebSocket path agents connect to on the controller's HTTP port. */
export const AGENT_PATH = '/agents';
/** The link's tenant for agents: the controller serves one agent link whatever the tenants of its tasks. */
export const AGENT_LINK_TENANT = 'agents';
export const AGENT_ROLE = 'agent';
/** A result carries the function's stdout and stderr: far above the link's default frame limit. */
export const AGENT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

const name = z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." and "-", starting with a letter or digit');
const bytes = z.number().int().nonnegative();

/** One task as both sides know it: enough for the controller to rebuild N_alloc/N_req after a restart. */
export const RunningTaskSchema = z.object({
  taskId: z.string().min(1).max(128),
  tenant: name,
  function: name,
  limitBytes: bytes,
  memBytes: bytes,
  /** Wall clock of the agent when it accepted the task (ms since the epoch); for display only. */
  startedAt: z.number(),
});
export type RunningTask = z.infer<typeof RunningTaskSchema>;

export const InvocationOutcomeSchema = z.object({
  exitCode: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
  /** The function's own run (exec to exit). */
  execMs: z.number().nonnegative(),
  /** Container create + start + readiness on the node, before the function ran. */
  startMs: z.number().nonnegative(),
  oomKills: z.number().int().nonnegative(),
});
export type InvocationOutcome = z.infer<typeof InvocationOutcomeSchema>;

export const ProfileFiguresSchema = z.object({
  /** U: peak memory of the function (the engine's peak cgroup rss). */
  peakMemoryBytes: bytes,
  /** F: largest file it left in /tmp. */
  largestFileBytes: bytes,
});
export type ProfileFigures = z.infer<typeof ProfileFiguresSchema>;

const failure = z.object({ code: z.string().min(1), message: z.string() });

export const FunctionRefSchema = z.object({
  tenant: name,
  function: name,
  image: z.string().min(1),
  command: z.array(z.string()).min(1),
  limitBytes: bytes.min(6 * 1024 * 1024),
  /** The profile's F: the node's /tmp uses it as its placement hint (new files straight to memory when 1.1·F fits). */
  largestFileBytes: bytes.optional(),
  /** The profile's U (peak native memory): with F it sorts the container into a pool for lending. */
  peakMemoryBytes: bytes.optional(),
});
export type FunctionRef = z.infer<typeof FunctionRefSchema>;

/** What an agent sends. */
export const ToController = messageSet(
  z.object({
    type: z.literal('register'),
    node: name,
    /** A fresh id per agent process: a new one under a known name means the agent restarted. */
    instanceId: z.string().min(1).max(128),
    limitBytes: bytes,
    running: z.array(RunningTaskSchema),
  }),
  /** The tasks the agent runs now: ones the controller does not know are adopted. (Liveness is the link's heartbeat.) */
  z.object({ type: z.literal('heartbeat'), running: z.array(RunningTaskSchema) }),
  z.object({
    type: z.literal('result'),
    taskId: z.string().min(1),
    outcome: InvocationOutcomeSchema.optional(),
    error: failure.optional(),
  }),
  z.object({
    type: z.literal('profile-result'),
    requestId: z.string().min(1),
    profile: ProfileFiguresSchema.optional(),
    error: failure.optional(),
  }),
);
export type ToControllerMessage = z.infer<typeof ToController.schema>;

/** What the controller sends. */
export const ToAgent = messageSet(
  /** The answer to `register`: how often to send `heartbeat`. */
  z.object({ type: z.literal('registered'), heartbeatMs: z.number().int().positive() }),
  z.object({
    type: z.literal('execute'),
    task: RunningTaskSchema,
    fn: FunctionRefSchema,
    args: z.array(z.string()),
    timeoutMs: z.number().int().positive(),
  }),
  z.object({
    type: z.literal('profile'),
    requestId: z.string().min(1),
    fn: FunctionRefSchema,
    inputs: z.array(z.array(z.string())).min(1),
    timeoutMs: z.number().int().positive(),
  }),
);
export type ToAgentMessage = z.infer<typeof ToAgent.schema>;
