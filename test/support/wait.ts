// Polling waits for the tests: every suite's `until`, in one place.

/** Waits until `cond()` holds, polling every `everyMs`; throws `timed out: what` after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs: number, what: string, everyMs?: number): Promise<void>;
/** Waits until `ok(read())`, polling; resolves with that value, or throws with the last one read. */
export async function until<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs: number, what: string, everyMs?: number): Promise<T>;
export async function until<T>(
  first: () => T | Promise<T>,
  second: ((v: T) => boolean) | number,
  third: number | string,
  fourth?: string | number,
  fifth?: number,
): Promise<T | void> {
  if (typeof second === 'number') {
    const cond = first as () => boolean;
    const end = Date.now() + second;
    const every = (fourth as number | undefined) ?? 20;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out: ${String(third)}`);
      await sleep(every);
    }
    return;
  }
  const end = Date.now() + (third as number);
  const every = fifth ?? 50;
  for (;;) {
    const v = await first();
    if (second(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${String(fourth)}: ${JSON.stringify(v)}`);
    await sleep(every);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
