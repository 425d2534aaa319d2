import { z } from 'zod';
import { LinkError } from './errors';

/** Largest frame either side accepts unless told otherwise; link messages are small control messages. */
export const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * A family of messages one side may receive: a zod union of objects, each with a literal `type`.
 * The set of type names is kept apart from the schema so a decoder can tell an unknown message
 * (E_UNKNOWN_MESSAGE) from a known one with bad fields (E_BAD_MESSAGE).
 */
export interface MessageSet<M extends { type: string }> {
  readonly schema: z.ZodType<M>;
  readonly types: ReadonlySet<string>;
}

type TypedObject = z.ZodObject<{ type: z.ZodLiteral<string> } & z.ZodRawShape>;

export function messageSet<const T extends readonly [TypedObject, ...TypedObject[]]>(
  ...objects: T
): MessageSet<z.infer<T[number]> & { type: string }> {
  const types = new Set<string>();
  for (const o of objects) {
    const literal = o.shape.type.value as string;
    if (types.has(literal)) throw new LinkError('E_BAD_CONFIG', `message type ${literal} defined twice`);
    types.add(literal);
  }
  // Strict objects: a field the receiver does not know is a mistake somewhere, not something to ignore.
  const strict = objects.map((o) => o.strict()) as unknown as [TypedObject, ...TypedObject[]];
  const schema = (strict.length === 1 ? strict[0] : z.discriminatedUnion('type', strict as never)) as unknown as z.ZodType<z.infer<T[number]> & { type: string }>;
  return { schema, types };
}

/** Link-level messages, reserved on every link. */
export const HelloSchema = z
  .object({
    type: z.literal('hello'),
    tenant: z.string().min(1).max(128),
    /** Absent only towards a server that admits anyone who reaches it (`token: null`). */
    token: z.string().min(1).max(256).optional(),
    role: z.string().min(1).max(64),
    peerId: z.string().min(1).max(256),
  })
  .strict();
export type Hello = z.infer<typeof HelloSchema>;

/** The server's heartbeat rides along, so a client may keep the same one (`heartbeat: 'server'`). */
export const WelcomeSchema = z
  .object({
    type: z.literal('welcome'),
    sessionId: z.string(),
    tenant: z.string(),
    heartbeat: z.object({ intervalMs: z.number().int().positive(), timeoutMs: z.number().int().positive() }).strict().optional(),
  })
  .strict();

/** The reply to anything refused: a stable code, a message for people, and what it answers. */
export const LinkErrorReplySchema = z
  .object({
    type: z.literal('error'),
    code: z.string(),
    message: z.string(),
    inReplyTo: z.string().optional(),
  })
  .strict();
export type LinkErrorReply = z.infer<typeof LinkErrorReplySchema>;

export const RESERVED_TYPES: ReadonlySet<string> = new Set(['hello', 'welcome', 'error']);

export type Decoded<M> =
  | { ok: true; message: M }
  | { ok: false; code: 'E_BAD_MESSAGE' | 'E_UNKNOWN_MESSAGE'; message: string; inReplyTo?: string };

/**
 * Decodes one frame. Never throws: any input gives either a checked message or the error to send
 * back. `inReplyTo` echoes the type and request id when they could be read, so the sender can tell
 * which message was refused.
 */
export function decodeMessage<M extends { type: string }>(set: MessageSet<M>, frame: string | Buffer, maxFrameBytes = MAX_FRAME_BYTES): Decoded<M> {
  const text = typeof frame === 'string' ? frame : frame.toString('utf8');
  if (Buffer.byteLength(text) > maxFrameBytes) return { ok: false, code: 'E_BAD_MESSAGE', message: 'frame too large' };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { ok: false, code: 'E_BAD_MESSAGE', message: `not JSON: ${(err as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, code: 'E_BAD_MESSAGE', message: 'a message must be a JSON object' };
  }
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string') return { ok: false, code: 'E_BAD_MESSAGE', message: 'a message needs a string "type"' };
  const requestId = (value as { requestId?: unknown }).requestId;
  const inReplyTo = typeof requestId === 'string' && requestId.length <= 256 ? `${type.slice(0, 64)}:${requestId}` : type.slice(0, 64);
  if (!set.types.has(type)) {
    return { ok: false, code: 'E_UNKNOWN_MESSAGE', message: `unknown message type ${JSON.stringify(type.slice(0, 64))}`, inReplyTo };
  }
  const parsed = set.schema.safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.map(String).join('.') || '(message)'}: ${i.message}`)
      .join('; ');
    return { ok: false, code: 'E_BAD_MESSAGE', message: `invalid ${type}: ${issues}`, inReplyTo };
  }
  return { ok: true, message: parsed.data };
}

/** Checks an outgoing message against its set before it leaves: a bug here must not reach the peer. */
export function encodeMessage<M extends { type: string }>(set: MessageSet<M>, message: M): string {
  const parsed = set.schema.safeParse(message);
  if (!parsed.success) {
    throw new LinkError('E_BAD_MESSAGE', `refusing to send an invalid ${message.type}: ${parsed.error.issues[0]?.message ?? ''}`);
  }
  return JSON.stringify(parsed.data);
}

/** The frame as an error reply from the peer, if it is one. */
export function asErrorReply(frame: string | Buffer): LinkErrorReply | undefined {
  const text = typeof frame === 'string' ? frame : frame.toString('utf8');
  // Cheap pre-check: most frames are not errors and need no second parse.
  if (!text.includes('"error"')) return undefined;
  try {
    const parsed = LinkErrorReplySchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
