/**
 * The one error model of every layer (bottom of the folder graph: it imports nothing of the
 * project). A layer lists its codes once as a `const` array, derives its code type from it and
 * subclasses `EphemeraError` with that type; callers and tests branch on `code`, never on the
 * message. The message is for people and never repeats the code: whoever prints an error for a
 * person (the CLI, the volume plugin's `Err`) prefixes it once, with `formatError`.
 */

/** A code as it crosses a layer boundary (a wire reply, a wrapped lower-layer error): any layer's code. */
export type ErrorCode = `E_${string}`;

/** What a layer may attach for programs (paths, errnos, validation issues); never needed to read the message. */
export type ErrorDetails = Readonly<Record<string, unknown>>;

export interface EphemeraErrorOptions<Details> extends ErrorOptions {
  details?: Details;
  /** The process exit status when this error ends the CLI (1 when unset). */
  exitCode?: number;
}

export class EphemeraError<Code extends string = string, Details = ErrorDetails | undefined> extends Error {
  readonly code: Code;
  readonly details: Details;
  readonly exitCode: number | undefined;

  constructor(code: Code, message: string, options: EphemeraErrorOptions<Details> = {}) {
    // Only pass `cause` when there is one: `{ cause: undefined }` still defines the property.
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details as Details;
    this.exitCode = options.exitCode;
  }
}

/**
 * The common shape of a layer's error, `new XError(code, message, details?, cause?)`: a layer
 * subclasses it with its code type and writes no constructor.
 */
export class LayerError<Code extends string = string> extends EphemeraError<Code> {
  constructor(code: Code, message: string, details?: ErrorDetails, cause?: unknown) {
    super(code, message, { details, cause });
  }
}

/** Any layer's error, whatever its details (a record, a list of issues …). */
export type AnyEphemeraError = EphemeraError<string, unknown>;

/** Any layer's error, optionally with one of the given codes. */
export function isEphemeraError(err: unknown, code?: string): err is AnyEphemeraError {
  return err instanceof EphemeraError && (code === undefined || err.code === code);
}

/** Narrows to one layer's error class, optionally with one of its codes: `isErrorOf(ManagerError, err, 'E_TOKEN')`. */
export function isErrorOf<E extends AnyEphemeraError>(cls: abstract new (...args: never[]) => E, err: unknown, code?: E['code']): err is E {
  return err instanceof cls && (code === undefined || err.code === code);
}

/** A layer's guard, `export const isManagerError = errorGuard(ManagerError)`: `isErrorOf` bound to one class. */
export function errorGuard<E extends AnyEphemeraError>(cls: abstract new (...args: never[]) => E): (err: unknown, code?: E['code']) => err is E {
  return (err: unknown, code?: E['code']): err is E => isErrorOf(cls, err, code);
}

/** Narrows `value` to one of a layer's codes (`isCode(ENGINE_ERROR_CODES, reply.code)`). */
export function isCode<const C extends string>(codes: readonly C[], value: unknown): value is C {
  return typeof value === 'string' && (codes as readonly string[]).includes(value);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The stable code of any error that has one: the project's errors, a lower layer's error carried
 * on a wire, or the native addon's (`E_MOUNT`, `E_STORE` …). Errno names (`ENOENT`) are not codes.
 */
export function errorCode(err: unknown): ErrorCode | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && /^E_[A-Z0-9_]+$/.test(code) ? (code as ErrorCode) : undefined;
}

/**
 * `CODE: message` for a person, the code exactly once. Our messages never hold the code; Node's
 * system errors lead theirs with the errno name ("ENOENT: no such file …"), so theirs is not added.
 */
export function formatError(err: unknown): string {
  const message = errorMessage(err);
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (typeof code !== 'string' || code === '') return message;
  if (!(err instanceof EphemeraError) && message.startsWith(`${code}:`)) return message;
  return `${code}: ${message}`;
}

/** The exit status an error asks the CLI for (1 unless it names one). */
export function exitCodeOf(err: unknown): number {
  const exitCode = (err as { exitCode?: unknown } | null | undefined)?.exitCode;
  return typeof exitCode === 'number' ? exitCode : 1;
}
