import { z } from 'zod';
import { ControllerError, issuesFrom } from './errors';

/**
 * The agent ⇄ controller link: JSON text frames over one WebSocket (`/agents`), every frame one
 * message validated by these schemas on receipt. An invalid frame is answered with `protocol-error`
 * and never applied. The agent speaks first (`register`); everything before a `welcome` other than
 * `register` is a protocol error.
 *
 * Sizes are bytes, times milliseconds. `T_lim` = `limitBytes`, `T_mem` = `memBytes`.
 */

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

export const AgentMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('register'),
    node: name,
    /** A fresh id per agent process: a new one under a known name means the agent restarted. */
    instanceId: z.string().min(1).max(128),
    limitBytes: bytes,
    running: z.array(RunningTaskSchema),
  }),
  /** Liveness, and the tasks the agent runs now: ones the controller does not know are adopted. */
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
]);
export type AgentMessage = z.infer<typeof AgentMessageSchema>;

export const ControllerMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), heartbeatMs: z.number().int().positive(), timeoutMs: z.number().int().positive() }),
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
  /** The controller will not keep this connection (duplicate name, bad register); it closes next. */
  z.object({ type: z.literal('reject'), code: z.string(), message: z.string() }),
  z.object({ type: z.literal('protocol-error'), message: z.string() }),
]);
export type ControllerMessage = z.infer<typeof ControllerMessageSchema>;

function decode<T>(schema: z.ZodType<T>, raw: unknown, side: string): T {
  let document: unknown;
  try {
    document = JSON.parse(typeof raw === 'string' ? raw : Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw));
  } catch (err) {
    throw new ControllerError('E_PROTOCOL', `${side} message is not JSON: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(document);
  if (!parsed.success) {
    const issues = issuesFrom('message', parsed.error.issues);
    throw new ControllerError('E_PROTOCOL', `invalid ${side} message: ${issues.map((i) => `${i.path}: ${i.reason}`).join('; ')}`, issues);
  }
  return parsed.data;
}

export function decodeAgentMessage(raw: unknown): AgentMessage {
  return decode(AgentMessageSchema, raw, 'agent');
}

export function decodeControllerMessage(raw: unknown): ControllerMessage {
  return decode(ControllerMessageSchema, raw, 'controller');
}

export function encode(message: AgentMessage | ControllerMessage): string {
  return JSON.stringify(message);
}

/** The WebSocket path agents connect to on the controller's HTTP port. */
export const AGENT_PATH = '/agents';
