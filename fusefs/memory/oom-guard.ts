import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { MemoryCgroup } from './cgroup';
import { MemoryCgroupError, isMemoryCgroupError } from './errors';
import { type HeadroomConfigInput, parseHeadroomConfig, usageMark } from './headroom';
import type { CgroupWatch, CgroupWatcher, LimitChange, OomKillEvent, ThrottleEvent, UnderOomEvent } from './watcher';

/**
 * Emergency stop for a function's own (anonymous) memory: instead of an immediate OOM kill at the
 * limit, the allocating task is held and an alarm asks for a loan (someone raises the limit and calls
 * `alarm.resolve()`). Nothing may hang for ever, so a watchdog ends the hold `answerTimeoutMs` after
 * the alarm if no one answered; the kernel then does what it would have done without us.
 *
 * cgroup v1: the hold is `memory.oom_control` = 1. A task that cannot be charged sleeps with
 * `under_oom 1` (polled every watcher tick, ≤ 20 ms, because `fastOom` is set on the watch) and
 * resumes when the limit is raised (measured 180 ms in design.md; see test/memory/oom-guard.test.ts
 * for alarm → resume here). Unpausing wakes the sleepers into the OOM killer. Only anonymous memory
 * can be rescued this way: a tmpfs write() held at the limit fails with ENOMEM after the raise.
 *
 * cgroup v2 has no pause. The guard sets `memory.high` to the usage mark (limit − headroom): above it
 * the kernel reclaims and throttles the allocating tasks (they sleep on return to user space) instead
 * of killing, and each throttle bumps `memory.events` `high`, which raises the alarm. The watchdog's
 * "unpause" is `memory.high = max`: tasks run on to `memory.max`, where the kernel's OOM killer acts.
 * The hold is softer than v1's (a throttled task still makes slow progress), which is why v2 has no
 * `under_oom` and no `resumed` event.
 */
export interface OomAlarm {
  readonly cgroup: MemoryCgroup;
  /** performance.now() when the stall was noticed. */
  readonly raisedAt: number;
  readonly answered: boolean;
  /** Call after raising the limit (a loan) or freeing memory; stops the watchdog for this alarm. */
  resolve(): void;
}

export interface OomGuardEvents {
  alarm: [OomAlarm];
  /** No answer in time: the hold was released and the kernel will OOM-kill. */
  watchdog: [{ cgroup: MemoryCgroup; alarm: OomAlarm; releasedAfterMs: number }];
  /** v1: the stalled task runs again (`under_oom` back to 0). */
  resumed: [{ cgroup: MemoryCgroup; alarm: OomAlarm; afterMs: number }];
  'guard-error': [{ cgroup: MemoryCgroup; error: MemoryCgroupError }];
}

export interface OomGuardOptions {
  readonly watcher: CgroupWatcher;
  /**
   * Alarm → release when unanswered. The default 900 ms plus one 20 ms poll keeps the whole stall
   * under 1 s.
   */
  readonly answerTimeoutMs?: number;
  /** After the watchdog released the hold, hold again this long after the OOM kill (or after this long anyway). */
  readonly rearmAfterMs?: number;
  /** v2 only: where memory.high is put (limit − headroom). */
  readonly headroom?: HeadroomConfigInput;
}

/** Guards armed in this process: released synchronously on exit, so a dying daemon never leaves a task held. */
const armedGuards = new Set<OomGuard>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const guard of armedGuards) guard.disarm();
  });
}

export class OomGuard extends EventEmitter<OomGuardEvents> {
  readonly cgroup: MemoryCgroup;
  private readonly watcher: CgroupWatcher;
  private readonly answerTimeoutMs: number;
  private readonly rearmAfterMs: number;
  private readonly headroom;
  private watch: CgroupWatch | undefined;
  private armed = false;
  private holding = false;
  private alarm: (OomAlarm & { settle(): void }) | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private rearmTimer: NodeJS.Timeout | undefined;
  private v2HighBeforeArm = Infinity;
  private readonly onWatcherUnderOom = (event: UnderOomEvent): void => {
    if (event.cgroup === this.cgroup) this.onUnderOom(event.underOom);
  };
  private readonly onWatcherOomKill = (event: OomKillEvent): void => {
    if (event.cgroup === this.cgroup && this.armed && !this.holding) this.scheduleRearm(0);
  };
  private readonly onWatcherThrottled = (event: ThrottleEvent): void => {
    if (event.cgroup === this.cgroup && this.holding) this.raiseAlarm();
  };
  private readonly onWatcherLimit = (event: LimitChange): void => {
    // v2's hold sits at a mark derived from the limit; a loan moves it.
    if (event.cgroup === this.cgroup && this.holding && this.cgroup.version === 2) this.guarded(() => this.hold());
  };

  constructor(cgroup: MemoryCgroup, options: OomGuardOptions) {
    super();
    this.cgroup = cgroup;
    this.watcher = options.watcher;
    this.answerTimeoutMs = options.answerTimeoutMs ?? 900;
    this.rearmAfterMs = options.rearmAfterMs ?? 1_000;
    this.headroom = parseHeadroomConfig(options.headroom);
    if (!Number.isInteger(this.answerTimeoutMs) || this.answerTimeoutMs < 0 || this.answerTimeoutMs > 1_000) {
      throw new MemoryCgroupError('E_BAD_CONFIG', `answerTimeoutMs must be an integer in [0, 1000], got ${this.answerTimeoutMs}`);
    }
    if (!Number.isInteger(this.rearmAfterMs) || this.rearmAfterMs < 0) {
      throw new MemoryCgroupError('E_BAD_CONFIG', `rearmAfterMs must be an integer ≥ 0, got ${this.rearmAfterMs}`);
    }
  }

  get isArmed(): boolean {
    return this.armed;
  }

  /** Starts holding tasks at the limit instead of killing them. */
  arm(): void {
    if (this.armed) return;
    if (this.cgroup.version === 2) this.v2HighBeforeArm = this.cgroup.high();
    this.watch = this.watcher.watch(this.cgroup, { fastOom: true });
    this.watcher.on('under_oom', this.onWatcherUnderOom);
    this.watcher.on('oom-kill', this.onWatcherOomKill);
    this.watcher.on('throttled', this.onWatcherThrottled);
    this.watcher.on('limit', this.onWatcherLimit);
    this.armed = true;
    armedGuards.add(this);
    installExitHook();
    this.hold();
    if (this.cgroup.version === 1 && this.cgroup.oomState().underOom) this.onUnderOom(true);
  }

  /** Stops holding (a held task meets the OOM killer) and stops listening. Safe to call twice. */
  disarm(): void {
    if (!this.armed) return;
    this.armed = false;
    armedGuards.delete(this);
    this.clearTimers();
    this.watcher.off('under_oom', this.onWatcherUnderOom);
    this.watcher.off('oom-kill', this.onWatcherOomKill);
    this.watcher.off('throttled', this.onWatcherThrottled);
    this.watcher.off('limit', this.onWatcherLimit);
    this.watch?.setFastOom(false);
    this.watch = undefined;
    this.alarm = undefined;
    try {
      this.release();
    } catch (err) {
      // The cgroup may be gone already; then nothing is held.
      if (!isMemoryCgroupError(err, 'E_NO_CGROUP')) throw err;
    }
  }

  close(): void {
    this.disarm();
    this.removeAllListeners();
  }

  private hold(): void {
    if (this.cgroup.version === 1) this.cgroup.setOomKillerPaused(true);
    else this.cgroup.setHigh(usageMark(this.cgroup.limit(), this.headroom));
    this.holding = true;
  }

  private release(): void {
    this.holding = false;
    if (this.cgroup.version === 1) this.cgroup.setOomKillerPaused(false);
    else this.cgroup.setHigh(this.v2HighBeforeArm);
  }

  private onUnderOom(underOom: boolean): void {
    if (underOom) {
      if (this.holding) this.raiseAlarm();
      return;
    }
    const alarm = this.alarm;
    if (alarm === undefined) return;
    this.alarm = undefined;
    if (this.watchdogTimer !== undefined) clearTimeout(this.watchdogTimer);
    this.watchdogTimer = undefined;
    this.emit('resumed', { cgroup: this.cgroup, alarm, afterMs: performance.now() - alarm.raisedAt });
  }

  private raiseAlarm(): void {
    if (this.alarm !== undefined && !this.alarm.answered) return;
    let answered = false;
    const guard = this;
    const alarm = {
      cgroup: this.cgroup,
      raisedAt: performance.now(),
      get answered() {
        return answered;
      },
      resolve() {
        if (answered || guard.alarm !== alarm) return;
        answered = true;
        // An answer buys one more window: if the task is still held after it, it is a new alarm.
        guard.startWatchdog(alarm);
      },
      settle() {
        answered = true;
      },
    };
    this.alarm = alarm;
    this.startWatchdog(alarm);
    this.emit('alarm', alarm);
  }

  private startWatchdog(alarm: OomAlarm & { settle(): void }): void {
    if (this.watchdogTimer !== undefined) clearTimeout(this.watchdogTimer);
    this.watchdogTimer = setTimeout(() => {
      this.watchdogTimer = undefined;
      if (this.alarm !== alarm) return;
      if (alarm.answered) {
        const stillHeld = this.cgroup.version === 1 ? this.guarded(() => this.cgroup.oomState().underOom) : false;
        if (stillHeld === true) {
          this.alarm = undefined;
          this.raiseAlarm();
        } else if (this.cgroup.version === 2) {
          this.alarm = undefined;
        }
        return;
      }
      this.guarded(() => this.release());
      alarm.settle();
      this.alarm = undefined;
      this.emit('watchdog', { cgroup: this.cgroup, alarm, releasedAfterMs: performance.now() - alarm.raisedAt });
      this.scheduleRearm(this.rearmAfterMs);
    }, this.answerTimeoutMs);
    // Never unref'd while a task is held: the release must happen even if nothing else keeps the loop alive.
  }

  private scheduleRearm(delayMs: number): void {
    if (this.rearmTimer !== undefined) clearTimeout(this.rearmTimer);
    this.rearmTimer = setTimeout(() => {
      this.rearmTimer = undefined;
      if (this.armed && !this.holding) this.guarded(() => this.hold());
    }, delayMs);
    this.rearmTimer.unref();
  }

  private clearTimers(): void {
    if (this.watchdogTimer !== undefined) clearTimeout(this.watchdogTimer);
    if (this.rearmTimer !== undefined) clearTimeout(this.rearmTimer);
    this.watchdogTimer = undefined;
    this.rearmTimer = undefined;
  }

  private guarded<T>(action: () => T): T | undefined {
    try {
      return action();
    } catch (err) {
      const error = isMemoryCgroupError(err) ? err : new MemoryCgroupError('E_CGROUP_IO', 'oom guard action failed', {}, err);
      this.emit('guard-error', { cgroup: this.cgroup, error });
      return undefined;
    }
  }
}
