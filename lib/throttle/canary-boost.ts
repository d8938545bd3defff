/**
 * The `canary`'s boost: full speed while nobody else uses the storage.
 *
 * Probe latency cannot tell "someone else is here" from "our own queue is
 * long"; the storage's I/O counters can, while our own blocks are drained.
 * Now and then the canary pauses its blocks (a quiet check; every
 * calibration pause counts as one too): once they have drained, every I/O
 * the storage completes beyond our probes is someone else's.
 * - Not boosted, a check waits for `enterQuietMs` without a foreign I/O;
 *   `quietChecks` such checks in a row start a boost. One quiet window of
 *   200 ms happens to a light load too (1 in 55 at 20 requests per second),
 *   and a boost that meets it costs that load its p99.
 * - Boosted, a check every `boostCheckEveryMs` needs only `stayQuietMs`.
 * - Any foreign I/O in a check, or a quiet window too short, ends the boost;
 *   so does a write the job did not make, seen by any probe.
 * - When a boost ends, the window goes on from where it was at the last
 *   check that found someone else (`resumeBusyWindow`), not from where the
 *   window rule grew it while the storage was quiet before the boost.
 */
import type { BoostReport } from './types.js';

export interface BoostOptions {
  /** False: no boost ever starts (the checks still count what calibrations see). */
  enabled: boolean;
  /** Quiet checks in a row that start a boost. */
  quietChecks: number;
  /** Time between checks while not boosted (or one quiet check short of it), ms. */
  checkEveryMs: number;
  /** Time between checks while boosted, ms. */
  boostCheckEveryMs: number;
  /** Quiet a check must see to start a boost, and to keep it, ms. */
  enterQuietMs: number;
  stayQuietMs: number;
  resumeBusyWindow: boolean;
}

/** What a probe's counters say. */
export interface ProbeCounts {
  /** The storage's completed I/O count, when the probe carried a valid one. */
  ios: number | undefined;
  /** The storage completed a write since the previous probe, and the job makes none. */
  foreignWrite: boolean;
}

/** One reading of the storage's I/O count during a pause, after our blocks drained. */
interface QuietMark {
  atNs: number;
  ios: number;
  probes: number;
}

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

export class CanaryBoost {
  readonly #o: BoostOptions;
  #deviceCounters = false;
  #lastWrites: number | undefined;
  #nextCheckNs: number | undefined;
  #boostedSinceNs: number | undefined;
  #boostedNs = 0;
  /** Quiet checks in a row while not boosted. */
  #quietChecks = 0;
  #checks = 0;
  #busyChecks = 0;
  #endedByWrites = 0;
  /** The window at the last check that found someone else while not boosted. */
  #busyWindow: number;
  /** First and last reading of the current pause's quiet window. */
  #quietFrom: QuietMark | undefined;
  #quietTo: QuietMark | undefined;
  #othersSeen = false;

  /** `window`: the canary's starting window, where a boost ends before any check found someone. */
  constructor(options: BoostOptions, window: number) {
    this.#o = options;
    this.#busyWindow = window;
  }

  get boosted(): boolean {
    return this.#boostedSinceNs !== undefined;
  }

  /** Whether any probe carried the storage's I/O count: quiet checks need it. */
  get deviceCounters(): boolean {
    return this.#deviceCounters;
  }

  /** Reads a probe's counters (garbage counts as none). Call once per probe. */
  readCounts(deviceIos: unknown, deviceWrites: unknown): ProbeCounts {
    const ios = count(deviceIos);
    if (ios !== undefined) this.#deviceCounters = true;
    const writes = count(deviceWrites);
    const foreignWrite = writes !== undefined && this.#lastWrites !== undefined && writes > this.#lastWrites;
    this.#lastWrites = writes;
    return { ios, foreignWrite };
  }

  /**
   * A write the job did not make, outside a pause: someone else is at work.
   * No boost begins on the quiet checks before it, and a boost ends now
   * rather than at the next check. Returns the window to go on with.
   */
  foreignWrite(nowNs: number, window: number): number {
    this.#quietChecks = 0;
    if (!this.boosted) return window;
    this.#endedByWrites++;
    const w = this.#end(nowNs, window);
    this.#nextCheckNs = nowNs + this.#o.checkEveryMs * 1e6;
    return w;
  }

  /** Whether a quiet check is due at `nowNs` (the first at the first probe with counters). */
  checkDue(nowNs: number): boolean {
    if (!this.#o.enabled || !this.#deviceCounters) return false;
    this.#nextCheckNs ??= nowNs;
    return nowNs >= this.#nextCheckNs;
  }

  /**
   * Time after a check's pause began from which our blocks have drained:
   * 1.25 × the median of the job's recent latencies, from 1 to 20 ms.
   */
  settleNs(jobRecentMedianNs: number): number {
    return Math.min(Math.max(1.25 * jobRecentMedianNs, 1e6), 20e6);
  }

  /** A pause (check or calibration) begins: a new quiet window. */
  beginPause(): void {
    this.#quietFrom = undefined;
    this.#quietTo = undefined;
    this.#othersSeen = false;
  }

  /**
   * A probe in a pause, after our blocks drained, with the storage's I/O
   * count `ios` and the number of probes so far: any I/O beyond one per
   * probe since the first such reading is someone else's.
   */
  observeDrained(nowNs: number, ios: number, probes: number): void {
    this.#quietFrom ??= { atNs: nowNs, ios, probes };
    this.#quietTo = { atNs: nowNs, ios, probes };
    if (ios - this.#quietFrom.ios > probes - this.#quietFrom.probes) this.#othersSeen = true;
  }

  /** Quiet time a check must see: long to start a boost, short to keep it. */
  quietNeededNs(): number {
    return (this.boosted ? this.#o.stayQuietMs : this.#o.enterQuietMs) * 1e6;
  }

  /** A check's pause is over: someone seen, quiet long enough, or 50 ms past the quiet needed. */
  checkDone(elapsedNs: number): boolean {
    const needNs = this.quietNeededNs();
    return this.#othersSeen || this.#quietNs() >= needNs || elapsedNs >= needNs + 50e6;
  }

  /**
   * A pause ended at `nowNs`. Every pause whose window counted I/O is a
   * check: someone seen ends a boost (and, not boosted, marks `window` as
   * the one held under a load); after a check's pause, quiet long enough
   * counts towards a boost or keeps it, too short ends it. The next check is
   * soon while boosted or one quiet check short of it. Returns the window
   * to go on with.
   */
  endPause(nowNs: number, kind: 'calibrate' | 'check', window: number): number {
    let w = window;
    if (this.#o.enabled && this.#quietFrom && this.#quietTo) {
      this.#checks++;
      if (this.#othersSeen) {
        this.#busyChecks++;
        this.#quietChecks = 0;
        if (!this.boosted) this.#busyWindow = window;
        w = this.#end(nowNs, w);
      } else if (kind === 'check') {
        if (this.#quietNs() < this.quietNeededNs()) {
          this.#quietChecks = 0;
          w = this.#end(nowNs, w);
        } else if (!this.boosted && ++this.#quietChecks >= this.#o.quietChecks) {
          this.#boostedSinceNs = nowNs;
          this.#quietChecks = 0;
        }
      }
    }
    const soon = this.boosted || this.#quietChecks > 0;
    this.#nextCheckNs = nowNs + (soon ? this.#o.boostCheckEveryMs : this.#o.checkEveryMs) * 1e6;
    return w;
  }

  report(nowNs: number): BoostReport {
    return {
      checks: this.#checks,
      busy: this.#busyChecks,
      endedByWrites: this.#endedByWrites,
      boostedMs:
        (this.#boostedNs + (this.#boostedSinceNs !== undefined ? Math.max(0, nowNs - this.#boostedSinceNs) : 0)) / 1e6,
      enabled: this.#o.enabled,
      deviceCounters: this.#deviceCounters,
    };
  }

  #quietNs(): number {
    return this.#quietTo && this.#quietFrom ? this.#quietTo.atNs - this.#quietFrom.atNs : 0;
  }

  /**
   * Someone else is back: the boost (if any) ends. The window was last set
   * by the rule before the boost, while the storage was quiet and the window
   * grew up to ×1.5 a round until a check started the boost (up to 700 ms):
   * resuming there would meet production's first requests with a deep
   * queue for the rounds it takes to shrink. With `resumeBusyWindow`, the
   * window goes on from the one held the last time a check found someone.
   */
  #end(nowNs: number, window: number): number {
    if (this.#boostedSinceNs === undefined) return window;
    this.#boostedNs += Math.max(0, nowNs - this.#boostedSinceNs);
    this.#boostedSinceNs = undefined;
    return this.#o.resumeBusyWindow ? Math.min(window, this.#busyWindow) : window;
  }
}
