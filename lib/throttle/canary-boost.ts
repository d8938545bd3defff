/**
 * The `canary`'s boost: full speed while nobody else uses the storage.
 *
 * Probe latency cannot tell "someone else is here" from "our own queue is
 * long"; the storage's I/O counters can, while our own reads are drained.
 * Now and then the canary pauses its blocks (a quiet check; every
 * calibration pause counts as one too): once they have drained, every read
 * the storage completes beyond our probes is someone else's, and so is
 * every write beyond what the job reports writing (canary-foreign-io.ts).
 *
 * "Nobody else" is a rate, not silence: a normal system writes its journal
 * now and then. Each check counts someone else's I/Os f over its drained
 * time d; over the checks of the last `horizonMs`, with F = Σf and D = Σd,
 * the storage counts as idle when F is improbably low for a load of
 * `quietIops` requests a second (Poisson: P(N ≤ F | quietIops · D) < 1e-3).
 * A load of `quietIops` is thus almost never boosted, one of a quarter of
 * it mostly is. A check that sees a burst (3 of someone else's I/Os, at
 * more than `quietIops`) forgets the checks before it: whether that load has gone is for the
 * checks after it to tell.
 * - Not boosted, a check waits for `enterQuietMs` of drained time (50 ms
 *   more when that brings the test within reach); it ends early once the
 *   test cannot pass, or once it passes with this check's time (at least a
 *   quarter of `enterQuietMs`) counted in. A boost starts
 *   at the end of a check when the horizon holds at least `quietChecks`
 *   checks and passes the test.
 * - Boosted, a check every `boostCheckEveryMs` waits `stayQuietMs`. The
 *   boost ends when a check sees a burst (3 of someone else's I/Os) or the
 *   horizon no longer looks idle (P(N ≤ F) > 5 %).
 * - Boosted, a write of someone else's, seen by any probe, ends it at once.
 * - With reads counted while running, a job's first boost, before anything
 *   of someone else's was seen, starts at the level that keeps a boost going
 *   (FIRST_ENTER_LEVEL); every later one needs ENTER_LEVEL.
 * - When a boost ends, the window goes on from where it was at the last
 *   check that found someone else (`resumeBusyWindow`), not from where the
 *   window rule grew it while the storage was quiet before the boost.
 */
import type { BoostReport } from './types.js';
import { ForeignIo, ForeignReads, MetaReads, type StorageReading } from './canary-foreign-io.js';

export interface BoostOptions {
  /** False: no boost ever starts (the checks still count what calibrations see). */
  enabled: boolean;
  /** Checks the horizon must hold before a boost starts. */
  quietChecks: number;
  /** Time between checks while not boosted (and not close to it), ms. */
  checkEveryMs: number;
  /** Time between checks while boosted, or while the last check was quiet, ms. */
  boostCheckEveryMs: number;
  /** Drained time of a check that may start a boost, and of one that keeps it, ms. */
  enterQuietMs: number;
  stayQuietMs: number;
  /** A rate of someone else's I/O, per second, that is never taken for idle. */
  quietIops: number;
  /** Checks older than this are forgotten, ms. */
  horizonMs: number;
  resumeBusyWindow: boolean;
  /**
   * Count someone else's reads while the job runs, where the probes carry
   * the counts for it (see ForeignReads): then no check is needed to start a
   * boost, one ends within a probe of a burst, and boosted checks come only
   * every `countedCheckEveryMs`.
   */
  counted: boolean;
  /** Time between quiet checks while boosted with reads counted, ms. */
  countedCheckEveryMs: number;
  /** The job's most reads in flight (how far the job's count may run ahead of the device's). */
  maxQueueDepth: number;
  /** Someone else's I/Os per second below which the storage is lightly loaded (0: never). */
  lightIops: number;
}

/**
 * Unused reads the storage's metadata reads for the job's reads may keep
 * (MetaReads): btrfs reads several checksum leaves at once now and then.
 */
const READ_META_CAP = 16;

/** Length of a window of reads counted while running, ms. */
const RUNNING_WINDOW_MS = 50;

/** Poisson test levels: to start a boost, and below which it goes on. */
const ENTER_LEVEL = 1e-3;
const STAY_LEVEL = 0.05;
/**
 * The level for a job's first boost while reads are counted and nothing of
 * someone else's has been seen yet: the one a boost needs to go on. A load
 * that slips through is found within about 3 of its requests (a burst ends
 * the boost), and the stricter level applies from then on; so this costs a
 * load at most a few slowed requests once per job, and saves an idle job
 * half of its wait (about 150 ms of counted time instead of 345 ms at
 * quietIops 20).
 */
const FIRST_ENTER_LEVEL = STAY_LEVEL;
/** Someone else's I/Os in one check, at a rate above quietIops, that end a boost at once. */
const BURST = 3;
/**
 * Someone else's I/Os over the windows of the last LIGHT_RECENT_MS (at
 * least LIGHT_BURST of them, at more than LIGHT_BURST_RATE × lightIops over
 * their time) that end a light load at once: a load that arrives after a
 * long quiet would otherwise take seconds to outweigh it in the horizon.
 * Twice the rate and several requests, so that a light load's requests
 * that happen to come close together (a write and its journal's) rarely
 * count as one.
 */
const LIGHT_BURST = 8;
const LIGHT_BURST_RATE = 2;
const LIGHT_RECENT_MS = 20;
/**
 * Drained time a check waits for, once it found someone else, to tell a
 * light load from a heavier one (unless it saw a light-load burst sooner).
 */
const LIGHT_CHECK_MS = 20;

/** Φ(z), the standard normal distribution function (Abramowitz-Stegun 7.1.26 for erf, error < 1.5e-7). */
function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

/** P(N ≤ k) for N Poisson with mean mu (for a mean above 100, its normal approximation). */
export function poissonCdf(k: number, mu: number): number {
  if (!(mu > 0)) return 1;
  if (mu > 100) return normalCdf((k + 0.5 - mu) / Math.sqrt(mu));
  let term = Math.exp(-mu);
  let sum = term;
  for (let i = 1; i <= k; i++) {
    term *= mu / i;
    sum += term;
  }
  return Math.min(1, sum);
}

/** What a probe's counters say. */
export interface ProbeCounts {
  /** Whether the probe carried the storage's counts. */
  counted: boolean;
  /** Someone else's writes found since the previous probe (0 when not known). */
  foreignWrites: number;
  /** Someone else's reads counted while running since the previous probe (0 when not counted). */
  foreignReads: number;
}

/** One reading of the storage's counts during a pause, after our blocks drained. */
interface QuietMark {
  atNs: number;
  /** Someone else's I/Os so far, with every read the device completed. */
  foreign: number;
  /** The same with the reads the device was given beyond the siblings' (undefined: not counted), and theirs. */
  beyondSiblings?: number;
  siblings?: number;
  probes: number;
}

/** A check's result: someone else's I/Os over its drained time. */
interface CheckWindow {
  endNs: number;
  drainedNs: number;
  foreign: number;
}

/** Drops the windows that ended before `fromNs` (in place); sums the rest. */
function recent(windows: CheckWindow[], fromNs: number): { foreign: number; drainedNs: number; windows: number } {
  let k = 0;
  while (k < windows.length && windows[k]!.endNs < fromNs) k++;
  if (k > 0) windows.splice(0, k);
  let foreign = 0;
  let drainedNs = 0;
  for (const x of windows) {
    foreign += x.foreign;
    drainedNs += x.drainedNs;
  }
  return { foreign, drainedNs, windows: windows.length };
}

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

export class CanaryBoost {
  readonly #o: BoostOptions;
  readonly #io = new ForeignIo();
  #deviceCounters = false;
  #nextCheckNs: number | undefined;
  #boostedSinceNs: number | undefined;
  #boostedNs = 0;
  #checks = 0;
  #busyChecks = 0;
  #endedByWrites = 0;
  #drainedNs = 0;
  #foreign = 0;
  /** The window at the last check that found someone else while not boosted. */
  #busyWindow: number;
  /** First and last reading of the current pause's drained window. */
  #quietFrom: QuietMark | undefined;
  #quietTo: QuietMark | undefined;
  #windows: CheckWindow[] = [];
  #lastQuiet = false;
  /** Reads counted while running (undefined until a probe carries the counts). */
  #reads: ForeignReads | undefined;
  /** Reads the storage makes for the job's own writes (allocation metadata), and for its reads (btrfs checksums). */
  readonly #meta = new MetaReads();
  #readMeta: MetaReads | undefined;
  /** At the last reading: the reads the device was given, and the siblings' (undefined: not counted). */
  #given: { device: number; siblings: number } | undefined;
  /** The running window: since when, and someone else's reads in it. */
  #runFromNs: number | undefined;
  #runForeign = 0;
  /** Someone else's reads counted while running, and the time counted (ns). */
  #runForeignTotal = 0;
  #countedNs = 0;
  /** The last running window found someone else's reads. */
  #runBusy = false;
  /** Someone else's I/O was seen (by a check, a running window or a write), or a boost has been. */
  #seenOrBoosted = false;
  /**
   * Every check and running window of the last horizonMs, for the light-load
   * test: unlike the boost's horizon, forgotten only on a burst above lightIops.
   */
  #lightWindows: CheckWindow[] = [];
  #lightSinceNs: number | undefined;
  #lightNs = 0;

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
  readCounts(
    nowNs: number,
    c: Partial<
      Record<
        | keyof StorageReading
        | 'deviceReads'
        | 'ownReads'
        | 'ownJobs'
        | 'siblingReads'
        | 'ownReadBytes'
        | 'readMetaBytes',
        unknown
      >
    >,
  ): ProbeCounts {
    const ios = count(c.ios);
    if (ios === undefined) return { counted: false, foreignWrites: 0, foreignReads: 0 };
    this.#deviceCounters = true;
    let foreignReads = 0;
    const deviceReads = count(c.deviceReads);
    const ownReads = count(c.ownReads);
    const siblingReads = count(c.siblingReads);
    // Siblings' reads go on while the job's are drained: a check counts the
    // device's reads given beyond theirs (both counted when submitted).
    this.#given =
      deviceReads !== undefined && ownReads !== undefined
        ? { device: deviceReads, siblings: siblingReads ?? 0 }
        : undefined;
    this.#meta.moved(count(c.ownWriteBytes));
    const readMetaBytes = count(c.readMetaBytes);
    if (readMetaBytes !== undefined && readMetaBytes > 0) {
      this.#readMeta ??= new MetaReads(readMetaBytes, READ_META_CAP);
      this.#readMeta.moved(count(c.ownReadBytes));
    }
    if (this.#o.enabled && this.#o.counted && deviceReads !== undefined && ownReads !== undefined) {
      this.#reads ??= new ForeignReads(this.#o.maxQueueDepth + 8);
      foreignReads = this.#explained(this.#reads.observe(deviceReads, ownReads, count(c.ownJobs) ?? 1), true);
    }
    const writes = count(c.writes);
    const foreignWrites = this.#io.observe(nowNs, {
      ios,
      writes: writes !== undefined && writes <= ios ? writes : undefined,
      writeBytes: count(c.writeBytes),
      ownWriteBytes: count(c.ownWriteBytes),
      ownWrites: count(c.ownWrites),
      unwrittenBytes: count(c.unwrittenBytes),
    });
    return { counted: true, foreignWrites, foreignReads };
  }

  /** Whether someone else's reads are counted while the job runs. */
  get counting(): boolean {
    return this.#reads !== undefined && this.#reads.broken === undefined;
  }

  /**
   * A probe while the job runs (not in a pause), with someone else's reads
   * it counted (readCounts). Every RUNNING_WINDOW_MS, or at once on a
   * burst, the window joins the horizon as a check's would: a boost starts
   * when the horizon looks idle, ends on a burst or when it no longer does.
   * Returns the window to go on with.
   */
  running(nowNs: number, window: number, foreignReads: number): number {
    if (!this.counting) return window;
    this.#runFromNs ??= nowNs;
    this.#runForeign += foreignReads;
    this.#runForeignTotal += foreignReads;
    const d = nowNs - this.#runFromNs;
    const burst = this.#burst(this.#runForeign, Math.max(d, 1e6));
    if (!burst && d < RUNNING_WINDOW_MS * 1e6) return window;
    const f = this.#runForeign;
    this.#runBusy = f > 0;
    if (f > 0) this.#seenOrBoosted = true;
    this.#runFromNs = nowNs;
    this.#runForeign = 0;
    this.#countedNs += d;
    this.#noteLight(nowNs, d, f);
    if (burst) this.#windows = [];
    else this.#windows.push({ endNs: nowNs, drainedNs: d, foreign: f });
    const { foreign, drainedNs, windows } = this.#horizon(nowNs);
    const p = poissonCdf(foreign, (this.#o.quietIops * drainedNs) / 1e9);
    if (f > 0 && !this.boosted) this.#busyWindow = window;
    if (this.boosted) {
      if (burst || p > STAY_LEVEL) {
        const w = this.#end(nowNs, window);
        this.#nextCheckNs = nowNs + this.#o.checkEveryMs * 1e6;
        return w;
      }
    } else if (windows >= this.#o.quietChecks && p < (this.#seenOrBoosted ? ENTER_LEVEL : FIRST_ENTER_LEVEL)) {
      this.#start(nowNs);
      this.#nextCheckNs = nowNs + this.#o.countedCheckEveryMs * 1e6;
    }
    return window;
  }

  /** Someone else's writes in bytes so far (counted while the job writes to the storage). */
  get foreignWriteBytes(): number {
    return this.#io.foreignWriteBytes;
  }

  /**
   * `writes` of someone else's, seen outside a pause. A boost ends now
   * rather than at the next check. Returns the window to go on with.
   */
  foreignWrite(nowNs: number, window: number, writes = 1): number {
    // Counted into the horizon (with no drained time of its own): no boost
    // starts on the quiet checks before it alone. A burst of them forgets
    // those checks, as a check's burst does.
    if (this.#o.enabled) {
      this.#seenOrBoosted = true;
      this.#noteLight(nowNs, 0, writes);
      if (writes >= BURST) this.#windows = [];
      else this.#windows.push({ endNs: nowNs, drainedNs: 0, foreign: writes });
    }
    if (!this.boosted) return window;
    this.#endedByWrites++;
    const w = this.#end(nowNs, window);
    this.#nextCheckNs = nowNs + this.#o.checkEveryMs * 1e6;
    return w;
  }

  /** Whether a quiet check is due at `nowNs` (the first at the first probe with counters). */
  checkDue(nowNs: number): boolean {
    if (!this.#o.enabled || !this.#deviceCounters) return false;
    // Reads counted while running: a boost needs no check to start. While
    // the running count finds someone, checks go on as usual (cheap under a
    // load; they also tell a device that splits the job's reads).
    if (this.counting && !this.boosted && !this.#runBusy) return false;
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

  /** A pause (check or calibration) begins: a new drained window. */
  beginPause(): void {
    this.#quietFrom = undefined;
    this.#quietTo = undefined;
    // The pause counts for itself (exactly): the running window before it is dropped.
    this.#runFromNs = undefined;
    this.#runForeign = 0;
  }

  /**
   * A probe in a pause, after our blocks drained, with the number of probes
   * so far (each probe is one read of ours).
   */
  observeDrained(nowNs: number, probes: number): void {
    const g = this.#given;
    const mark: QuietMark = {
      atNs: nowNs,
      foreign: this.#io.count,
      probes,
      ...(g !== undefined
        ? { beyondSiblings: g.device - g.siblings + this.#io.foreignWrites, siblings: g.siblings }
        : {}),
    };
    this.#quietFrom ??= mark;
    this.#quietTo = mark;
  }

  /** Drained time a check waits for: long to start a boost, short to keep it. */
  quietNeededNs(): number {
    return (this.boosted ? this.#o.stayQuietMs : this.#o.enterQuietMs) * 1e6;
  }

  /**
   * A check's pause is over: its time is filled, it cannot be (50 ms past
   * the time needed), it saw a burst, or (not boosted) it has seen enough
   * that no boost can start however quiet the rest of it, or enough that
   * one starts now.
   */
  checkDone(elapsedNs: number, nowNs = this.#quietTo?.atNs ?? 0): boolean {
    const needNs = this.quietNeededNs();
    const f = this.#explained(this.#windowForeign(), false);
    const d = this.#drainedNowNs();
    if (this.#burst(f, d) || elapsedNs >= needNs + 50e6) return true;
    if (this.boosted) return d >= needNs;
    const { foreign, drainedNs, windows } = this.#horizon(nowNs);
    const enough = windows + 1 >= this.#o.quietChecks;
    const passes = (extraNs: number): boolean =>
      enough && poissonCdf(foreign + f, (this.#o.quietIops * (drainedNs + extraNs)) / 1e9) < ENTER_LEVEL;
    // Quiet enough already: with this check's time (at least a quarter of
    // enterQuietMs) the horizon passes the test, and the boost starts now.
    if (d >= needNs / 4 && passes(d)) return true;
    // Its time is filled: it goes on (up to 50 ms more) only while the test
    // is within reach of that.
    if (d >= needNs) return !passes(needNs + 50e6);
    // Someone else seen: over as soon as no boost could start however quiet
    // the rest of it, and (with a light-load rate) once it can tell a light
    // load from a heavier one.
    const light = !(this.#o.lightIops > 0) || d >= LIGHT_CHECK_MS * 1e6 || this.#lightBurst(f, d);
    return f > 0 && !passes(needNs) && light;
  }

  /**
   * A pause ended at `nowNs`. Every pause whose window counted I/O is a
   * check: its someone-else count joins the horizon; a burst, or a horizon
   * that no longer looks idle, ends a boost (and, not boosted, someone seen
   * marks `window` as the one held under a load); after a check's pause, a
   * horizon that looks idle starts a boost. The next check is soon while boosted or after a quiet
   * check. Returns the window to go on with.
   */
  endPause(nowNs: number, kind: 'calibrate' | 'check', window: number): number {
    let w = window;
    if (this.#o.enabled && this.#quietFrom && this.#quietTo) {
      const f = this.#explained(this.#windowForeign(), true);
      const d = this.#drainedNowNs();
      this.#checks++;
      this.#drainedNs += d;
      this.#foreign += f;
      // A burst says someone is there now; whether they have gone is for
      // the checks after it to tell, without the quiet ones before it.
      const burst = this.#burst(f, d);
      this.#noteLight(nowNs, d, f);
      if (burst) this.#windows = [];
      else this.#windows.push({ endNs: nowNs, drainedNs: d, foreign: f });
      const { foreign, drainedNs, windows } = this.#horizon(nowNs);
      const p = poissonCdf(foreign, (this.#o.quietIops * drainedNs) / 1e9);
      this.#lastQuiet = f === 0;
      if (f > 0) {
        this.#seenOrBoosted = true;
        this.#busyChecks++;
        if (!this.boosted) this.#busyWindow = window;
      }
      if (this.boosted) {
        // A check whose probes were too slow to fill its time (the job's own
        // writeback on the storage can do that) counts for what it saw.
        if (burst || p > STAY_LEVEL) w = this.#end(nowNs, w);
      } else if (kind === 'check' && windows >= this.#o.quietChecks && p < ENTER_LEVEL) {
        this.#start(nowNs);
      }
    }
    if (this.#reads !== undefined && this.counting && this.#quietFrom && this.#quietTo) {
      // Reads counted while running against the checks' exact counts: a
      // device that splits the job's reads shows as someone else's reads
      // while the job runs and not in the checks. When the checks' count is
      // improbably low for even a quarter of the running rate, counting
      // while running stops.
      const runRate = this.#runForeignTotal / (this.#countedNs / 1e9);
      if (
        this.#runForeignTotal >= 20 &&
        this.#drainedNs >= 300e6 &&
        poissonCdf(this.#foreign, (runRate / 4) * (this.#drainedNs / 1e9)) < ENTER_LEVEL
      )
        this.#reads.stop(
          `the device counted ${runRate.toFixed(0)} reads a second beyond the job's while it ran, and the quiet checks ${(this.#foreign / (this.#drainedNs / 1e9)).toFixed(1)}: it splits the job's reads`,
        );
      this.#reads.rebase();
    }
    // After a quiet calibration the check follows at once: together they
    // make the time a boost needs, with no blocks of ours between them.
    const soon = this.boosted || this.#lastQuiet;
    const nextMs =
      kind === 'calibrate' && this.#lastQuiet && !this.boosted
        ? 0
        : this.boosted && this.counting
          ? this.#o.countedCheckEveryMs
          : soon
            ? this.#o.boostCheckEveryMs
            : this.#o.checkEveryMs;
    this.#nextCheckNs = nowNs + nextMs * 1e6;
    return w;
  }

  /** Whether the job has reported writes to the storage it protects. */
  get jobWrites(): boolean {
    return this.#io.jobWrites;
  }

  /**
   * Whether the storage is lightly loaded now: the checks and running
   * windows of the last horizonMs count improbably few of someone else's
   * I/Os for a load of lightIops (P(N ≤ F) < 1e-3 to begin, until P > 5 %),
   * and none of them saw a burst above it. Never while boosted.
   */
  get light(): boolean {
    return this.#lightSinceNs !== undefined && !this.boosted;
  }

  /** A check's or running window's count joins the light-load horizon; the state follows. */
  #noteLight(nowNs: number, drainedNs: number, foreign: number): void {
    const lightIops = this.#o.lightIops;
    if (!(lightIops > 0) || !this.#o.enabled) return;
    this.#lightWindows.push({ endNs: nowNs, drainedNs, foreign });
    let fr = 0;
    let dr = 0;
    for (let i = this.#lightWindows.length - 1; i >= 0; i--) {
      const x = this.#lightWindows[i]!;
      if (x.endNs < nowNs - LIGHT_RECENT_MS * 1e6) break;
      fr += x.foreign;
      dr += x.drainedNs;
    }
    const burst = this.#lightBurst(fr, dr);
    if (burst) this.#lightWindows = [];
    const { foreign: f, drainedNs: d } = recent(this.#lightWindows, nowNs - this.#o.horizonMs * 1e6);
    const p = poissonCdf(f, (lightIops * d) / 1e9);
    const light = this.#lightSinceNs !== undefined;
    if (light && (burst || p > STAY_LEVEL)) {
      this.#lightNs += Math.max(0, nowNs - this.#lightSinceNs!);
      this.#lightSinceNs = undefined;
    } else if (!light && !burst && this.#lightWindows.length >= this.#o.quietChecks && p < ENTER_LEVEL) {
      this.#lightSinceNs = nowNs;
    }
  }

  report(nowNs: number): BoostReport {
    return {
      lightMs: (this.#lightNs + (this.#lightSinceNs !== undefined ? Math.max(0, nowNs - this.#lightSinceNs) : 0)) / 1e6,
      checks: this.#checks,
      busy: this.#busyChecks,
      endedByWrites: this.#endedByWrites,
      boostedMs:
        (this.#boostedNs + (this.#boostedSinceNs !== undefined ? Math.max(0, nowNs - this.#boostedSinceNs) : 0)) / 1e6,
      enabled: this.#o.enabled,
      deviceCounters: this.#deviceCounters,
      foreignIops: this.#drainedNs > 0 ? this.#foreign / (this.#drainedNs / 1e9) : 0,
      foreignWriteBytes: this.#io.foreignWriteBytes,
      drainedMs: this.#drainedNs / 1e6,
      running: {
        counted: this.#reads !== undefined,
        // Beyond what the job's own I/O explains (MetaReads).
        reads: this.#runForeignTotal,
        countedMs: this.#countedNs / 1e6,
        ...(this.#reads?.broken !== undefined ? { stopped: this.#reads.broken } : {}),
      },
    };
  }

  /** A light load's end: LIGHT_BURST or more of someone else's I/Os, at more than LIGHT_BURST_RATE × lightIops. */
  #lightBurst(foreign: number, drainedNs: number): boolean {
    return foreign >= LIGHT_BURST && foreign > (LIGHT_BURST_RATE * this.#o.lightIops * Math.max(drainedNs, 1e6)) / 1e9;
  }

  /** A burst: BURST or more of someone else's I/Os, at a rate above quietIops. */
  #burst(foreign: number, drainedNs: number): boolean {
    return foreign >= BURST && foreign > (this.#o.quietIops * drainedNs) / 1e9;
  }

  /** Of `reads` beyond the job's, those that its own I/O does not explain (MetaReads); `take` uses the explanation up. */
  #explained(reads: number, take: boolean): number {
    const left = take ? this.#meta.take(reads) : this.#meta.peek(reads);
    if (this.#readMeta === undefined) return left;
    return take ? this.#readMeta.take(left) : this.#readMeta.peek(left);
  }

  /** Someone else's I/Os in the current window: all counted beyond one read per probe. */
  #windowForeign(): number {
    const a = this.#quietFrom;
    const b = this.#quietTo;
    if (!a || !b) return 0;
    // With siblings at either end (one that joined during the window read
    // nothing before it), the reads given beyond theirs.
    if (a.beyondSiblings !== undefined && b.beyondSiblings !== undefined && (a.siblings ?? 0) + (b.siblings ?? 0) > 0)
      return Math.max(0, b.beyondSiblings - a.beyondSiblings - (b.probes - a.probes));
    return Math.max(0, b.foreign - a.foreign - (b.probes - a.probes));
  }

  #drainedNowNs(): number {
    return this.#quietTo && this.#quietFrom ? this.#quietTo.atNs - this.#quietFrom.atNs : 0;
  }

  /** The checks of the last horizonMs: their someone-else count and drained time. */
  #horizon(nowNs: number): { foreign: number; drainedNs: number; windows: number } {
    return recent(this.#windows, nowNs - this.#o.horizonMs * 1e6);
  }

  /**
   * Someone else is back: the boost (if any) ends. The window was last set
   * by the rule before the boost, while the storage was quiet and the window
   * grew up to ×1.5 a round until a check started the boost: resuming there
   * would meet production's first requests with a deep queue for the rounds
   * it takes to shrink. With `resumeBusyWindow`, the window goes on from the
   * one held the last time a check found someone.
   */
  #start(nowNs: number): void {
    this.#boostedSinceNs = nowNs;
    this.#seenOrBoosted = true;
  }

  #end(nowNs: number, window: number): number {
    if (this.#boostedSinceNs === undefined) return window;
    this.#boostedNs += Math.max(0, nowNs - this.#boostedSinceNs);
    this.#boostedSinceNs = undefined;
    return this.#o.resumeBusyWindow ? Math.min(window, this.#busyWindow) : window;
  }
}
