import { BaseController } from './base-controller.js';
import { CanaryBoost } from './canary-boost.js';
import { HarmCalibration } from './canary-calibration.js';
import { THROTTLE_DEFAULTS, type ThrottleOptions } from './controller-options.js';
import { clamp, pacedDecision, pacingLatencyNs } from './decision.js';
import { LatencyEstimator } from './estimator.js';
import type { LatencySample, ThrottleDecision, ThrottleReport } from './types.js';

/**
 * `canary` (the default): a window rule driven by what production sees
 * instead of by the job's own latency. Beside the job, one small read at a
 * time (a probe, 4 KiB, at a few fixed places) measures the latency any
 * other small request meets on the storage right now; the job's own blocks
 * mostly measure the queue the job itself builds, which says little about
 * the harm it does to others.
 *
 * Harm is counted in the tail, as production's p99 is: H = factor × the
 * idle probes' `quantile` (default their 90th percentile), and a is the
 * share of idle probes slower than H, at least 5 % (with a fixed target H,
 * a = 5 %). Per round of `probesPerRound` probes, f (an EWMA, α = 0.3 per
 * round) is the share slower than H, and
 *     W ← (1 − γ) · W + γ · (r · W + β),   r = clamp((a + ε) / (f + ε), ¼, 2)
 * with ε = 0.05: PARDA's rule (Gulati et al., FAST'09) with the share of slow
 * probes in place of the latency. The tail rule takes the smaller of r and
 * the same ratio for the share of probes slower than `tailFactor` · H (2 · H,
 * allowed `tailShare`, 2 %): production's bound is on its p99, and the share
 * above H can stay at its idle level while the tail grows. β (4 KiB) is also
 * the window's floor (r ≥ ¼: W ≥ β / (1 − ¼)). One probe slower than 4 · H
 * (a burst of production meeting a large window) halves W at once, once per
 * round.
 * H comes from idle probes in calibration pauses (canary-calibration.ts);
 * while quiet checks find nobody else on the storage, the job is boosted
 * (canary-boost.ts). Both pause the job's blocks: the decision is "no new
 * block" until the pause ends.
 * W becomes the deepest queue (up to maxQueueDepth) of the smallest requests
 * that hold it: at equal throughput, a production request that lands behind
 * a small request of ours waits for less. Below the smallest block's worth,
 * blocks are paced (Little's law).
 * Without probes it has no signal and keeps its window (JobThrottle runs
 * `parda` instead when it has nothing to probe).
 */
/** While boosted with reads counted, the queue is what the storage drains in this long (ms). */
const COUNTED_DRAIN_MS = 4;

export class CanaryController extends BaseController {
  readonly name = 'canary' as const;
  /** Probe latency: smoothed value and window percentiles. */
  readonly probes: LatencyEstimator;
  private window: number;
  private readonly minWindow: number;
  private readonly maxWindow: number;
  private readonly calibration: HarmCalibration;
  private readonly boost: CanaryBoost;

  /** Whether the job is boosted now: nobody else was found on the storage. */
  get boosted(): boolean {
    return this.boost.boosted;
  }
  /** EWMA of the share of probes slower than the harm latency. */
  private slowShare = 0;
  /** EWMA of the share of probes slower than tailFactor × the harm latency. */
  private tailShare = 0;
  private roundSamples = 0;
  private roundSlow = 0;
  private roundTail = 0;
  private probeCount = 0;
  private lastCutAt = -Infinity;
  private pausedAtNs: number | undefined;
  private pause: 'calibrate' | 'check' | undefined;
  /** The pause began with nothing of ours in flight (it follows another). */
  private drainedPause = false;

  constructor(options: ThrottleOptions) {
    super(options);
    const o = this.options;
    const c = o.canary;
    this.probes = new LatencyEstimator(o.estimator);
    this.maxWindow = o.maxQueueDepth * o.maxBlockSize;
    this.minWindow = (o.minQueueDepth * o.minBlockSize) / 64;
    // Start small (four smallest blocks) and grow: the rule at most
    // multiplies W by 1.5 per round, so full speed is under a second away.
    this.window = clamp(4 * o.minBlockSize, this.minWindow, this.maxWindow);
    // Until a calibration says otherwise (and for good with a fixed target),
    // no probe is expected to be slower than H.
    this.calibration = new HarmCalibration(
      {
        calibrate: c.calibrate,
        factor: c.factor,
        quantile: c.quantile,
        calibrationProbes: c.calibrationProbes,
        calibrationsKept: c.calibrationsKept,
        calibrateEveryMs: c.calibrateEveryMs,
        pauseMs: c.pauseMs,
        earlyEveryMs: THROTTLE_DEFAULTS.canaryEarlyCalibrationMs,
      },
      this.targetNs,
    );
    this.boost = new CanaryBoost(
      {
        enabled: c.boost,
        quietChecks: c.boostQuietChecks,
        checkEveryMs: c.checkEveryMs,
        boostCheckEveryMs: c.boostCheckEveryMs,
        enterQuietMs: THROTTLE_DEFAULTS.canaryEnterQuietMs,
        stayQuietMs: THROTTLE_DEFAULTS.canaryStayQuietMs,
        quietIops: c.quietIops,
        horizonMs: THROTTLE_DEFAULTS.canaryQuietHorizonMs,
        resumeBusyWindow: c.resumeBusyWindow,
        counted: c.counted,
        countedCheckEveryMs: c.countedCheckEveryMs,
        maxQueueDepth: o.maxQueueDepth,
        lightIops: c.lightIops,
      },
      this.window,
    );
  }

  override probeState(): { latencyNs: number; targetNs: number } {
    return { latencyNs: this.probes.smoothedNs, targetNs: this.calibration.harmNs };
  }

  protected override nowNs(): number {
    return Math.max(this.latency.nowNs, this.probes.nowNs);
  }

  /** The largest request the device takes unsplit, while reads are counted (from the probes). */
  private requestCap = Infinity;

  /** The job's throughput, bytes/s (EWMA over ~100 ms windows of its samples). */
  private rateBps = 0;
  private rateFromNs: number | undefined;
  private rateFromBytes = 0;

  protected onSample(): void {
    const now = this.latency.nowNs;
    if (this.rateFromNs === undefined) {
      this.rateFromNs = now;
      this.rateFromBytes = this.bytes;
      return;
    }
    const d = now - this.rateFromNs;
    if (d < 100e6) return;
    const r = ((this.bytes - this.rateFromBytes) * 1e9) / d;
    this.rateBps = this.rateBps > 0 ? 0.5 * this.rateBps + 0.5 * r : r;
    this.rateFromNs = now;
    this.rateFromBytes = this.bytes;
  }

  /**
   * Blocks in flight while boosted. With reads counted while running, a
   * load that arrives is found within a probe or two, and then meets the
   * queue the job already has at the device: at most what the storage
   * drains in COUNTED_DRAIN_MS at the job's throughput (from
   * boostQueueDepth up to countedBoostQueueDepth). Otherwise
   * boostQueueDepth.
   */
  private boostedQueueDepth(): number {
    const c = this.options.canary;
    if (!this.boost.counting) return c.boostQueueDepth;
    const q = Math.floor((this.rateBps * COUNTED_DRAIN_MS) / 1e3 / this.options.maxBlockSize);
    return clamp(q, c.boostQueueDepth, Math.max(c.boostQueueDepth, c.countedBoostQueueDepth));
  }

  override observeProbe(sample: LatencySample): void {
    const s: Partial<LatencySample> = sample ?? {};
    if (this.probes.observe(s.latencyNs as number, s.atNs) === 'invalid') return;
    this.probeCount++;
    const v = this.probes.lastNs;
    const now = this.nowNs();
    const { counted, foreignWrites, foreignReads } = this.boost.readCounts(now, {
      ios: s.deviceIos,
      writes: s.deviceWrites,
      writeBytes: s.deviceWriteBytes,
      ownWriteBytes: s.ownWriteBytes,
      ownWrites: s.ownWrites,
      unwrittenBytes: s.unwrittenBytes,
      deviceReads: s.deviceReadsSubmitted,
      ownReads: s.ownReadsSubmitted,
      ownJobs: s.ownReadsJobs,
      siblingReads: s.siblingReadsSubmitted,
      ownReadBytes: s.ownReadBytes,
      readMetaBytes: s.readMetaBytes,
    });
    const cap = s.deviceMaxRequestBytes;
    if (typeof cap === 'number' && Number.isFinite(cap) && cap > 0) this.requestCap = cap;
    if (this.pausedAtNs !== undefined) {
      this.pausedProbe(v, counted, now, now - this.pausedAtNs);
      return;
    }
    // Boosted, the quiet checks find nobody else on the storage and the
    // window rule rests: a calibration is not needed until the boost ends
    // (once one has counted: H is needed when the boost ends).
    if ((!this.boost.boosted || this.calibration.count === 0) && this.calibration.due(now)) {
      this.startPause('calibrate', now);
      return;
    }
    if (foreignWrites > 0) this.window = this.boost.foreignWrite(now, this.window, foreignWrites);
    this.window = this.boost.running(now, this.window, foreignReads);
    if (this.boost.checkDue(now)) {
      this.startPause('check', now);
      return;
    }
    // Boosted, the probes wait behind our own deep queue whether or not
    // anyone else is there: they say nothing, and the window rule rests
    // until a quiet check ends the boost.
    if (this.boost.boosted) return;
    this.windowRule(v);
  }

  /**
   * A probe during a pause. Probes that completed after our blocks in flight
   * drained are idle ones; the storage's reads counted between them are the
   * probes' and others'.
   */
  private pausedProbe(latencyNs: number, counted: boolean, now: number, elapsedNs: number): void {
    const calibrating = this.pause === 'calibrate';
    const settleNs = calibrating
      ? this.calibration.settleNs(this.latency.smoothedNs)
      : this.drainedPause
        ? 0
        : this.boost.settleNs(this.latency.recentMedianNs());
    if (elapsedNs >= settleNs) {
      if (calibrating) this.calibration.addIdle(latencyNs);
      if (counted) this.boost.observeDrained(now, this.probeCount);
    }
    const done = calibrating ? this.calibration.done(elapsedNs) : this.boost.checkDone(elapsedNs, now);
    if (done) this.endPause(now);
  }

  /** Counts one probe into the round; at the end of a round, moves the window. */
  private windowRule(v: number): void {
    const o = this.options;
    const harm = this.calibration.harmNs;
    const idleSlowShare = this.calibration.idleSlowShare;
    this.roundSamples++;
    if (v > harm) this.roundSlow++;
    if (o.canary.tailFactor > 0 && v > o.canary.tailFactor * harm) this.roundTail++;
    // A probe far slower than the harm latency (production arriving in a
    // burst, while the window is large) halves the window at once, at most
    // once per round: a round of waiting would let the burst meet our whole
    // queue for tens of milliseconds.
    if (v > 4 * harm && this.probeCount - this.lastCutAt >= o.canary.probesPerRound) {
      this.lastCutAt = this.probeCount;
      this.window = clamp(this.window / 2, this.minWindow, this.maxWindow);
      this.slowShare = Math.max(this.slowShare, (idleSlowShare + 1) / 2);
    }
    if (this.roundSamples < o.canary.probesPerRound) return;
    this.slowShare += 0.3 * (this.roundSlow / this.roundSamples - this.slowShare);
    this.tailShare += 0.3 * (this.roundTail / this.roundSamples - this.tailShare);
    this.resetRound();
    // At least 5 %: with no slow idle probe at all (a quiet device), the rule
    // must still grow the window when the probes stay fast.
    const allowed = Math.max(idleSlowShare, 0.05);
    const eps = 0.05;
    let ratio = clamp((allowed + eps) / (this.slowShare + eps), 0.25, 2);
    if (o.canary.tailFactor > 0) {
      // The same rule on the tail, with ε at half the allowed share: the
      // smaller of the two ratios wins.
      const t = o.canary.tailShare;
      ratio = Math.min(ratio, clamp((1.5 * t) / (this.tailShare + t / 2), 0.25, 2));
    }
    const { gamma } = o.parda;
    this.window = clamp(
      (1 - gamma) * this.window + gamma * (ratio * this.window + o.canary.betaBytes),
      this.minWindow,
      this.maxWindow,
    );
  }

  private resetRound(): void {
    this.roundSamples = 0;
    this.roundSlow = 0;
    this.roundTail = 0;
  }

  private startPause(kind: 'calibrate' | 'check', now: number): void {
    this.pausedAtNs = now;
    this.pause = kind;
    if (kind === 'calibrate') this.calibration.begin();
    this.boost.beginPause();
    this.resetRound();
  }

  private endPause(now: number): void {
    const kind = this.pause!;
    if (kind === 'calibrate') this.calibration.finish(now);
    // Every pause is a quiet check: with our reads drained, the storage's
    // reads beyond our probes', and writes beyond our own, are someone else's.
    this.window = this.boost.endPause(now, kind, this.window);
    this.pausedAtNs = undefined;
    this.pause = undefined;
    this.drainedPause = false;
    // A check due right after a calibration (a quiet one) goes on from it,
    // with nothing of ours to drain.
    if (kind === 'calibrate' && this.boost.checkDue(now)) {
      this.startPause('check', now);
      this.drainedPause = true;
    }
  }

  /**
   * While someone else's reads are counted, the job's requests stay within
   * what the device takes as one (a request split in two would count as one
   * of someone else's).
   */
  protected current(): ThrottleDecision {
    const d = this.uncapped();
    if (!this.boost.counting || d.blockSize <= this.requestCap) return d;
    const o = this.options;
    const size = Math.max(o.minBlockSize, Math.floor(this.requestCap / o.alignment) * o.alignment);
    // The same bytes in flight, in more requests.
    const queueDepth = clamp(Math.round((d.queueDepth * d.blockSize) / size), o.minQueueDepth, o.maxQueueDepth);
    return { ...d, blockSize: Math.min(d.blockSize, size), queueDepth };
  }

  private uncapped(): ThrottleDecision {
    const o = this.options;
    if (this.pausedAtNs !== undefined) {
      // Paused: nothing new of ours until the pause ends.
      return { delayMs: o.maxDelayMs, queueDepth: o.minQueueDepth, blockSize: o.minBlockSize };
    }
    if (this.boost.boosted) {
      return {
        delayMs: 0,
        queueDepth: clamp(this.boostedQueueDepth(), o.minQueueDepth, o.maxQueueDepth),
        blockSize: o.maxBlockSize,
      };
    }
    const w = this.window;
    if (this.boost.light && !this.boost.jobWrites) {
      // A light load: at least lightQueueDepth requests of lightBlockSize
      // (not for a job that writes to this storage: in bench:impact its
      // writes, not its reads, took a light load's p99 several times up).
      const c = o.canary;
      const size = clamp(Math.floor(c.lightBlockSize / o.alignment) * o.alignment, o.minBlockSize, o.maxBlockSize);
      const queueDepth = clamp(c.lightQueueDepth, o.minQueueDepth, o.maxQueueDepth);
      if (w < queueDepth * size) return { delayMs: 0, queueDepth, blockSize: size };
    }
    if (w >= o.minQueueDepth * o.minBlockSize) {
      // The deepest queue of the smallest requests that holds W: a production
      // request that lands behind one of ours waits for less.
      const align = o.alignment;
      const size = clamp(Math.floor(w / o.maxQueueDepth / align) * align, o.minBlockSize, o.maxBlockSize);
      return { delayMs: 0, queueDepth: clamp(Math.round(w / size), o.minQueueDepth, o.maxQueueDepth), blockSize: size };
    }
    // Paced with our own smoothed latency; before any, the probes'.
    return pacedDecision(
      o,
      w,
      this.latency.count > 0 ? pacingLatencyNs(this.latency) : this.probes.smoothedNs || this.calibration.harmNs,
    );
  }

  override report(): ThrottleReport {
    return {
      ...super.report(),
      probes: {
        count: this.probeCount,
        invalid: this.probes.invalid,
        smoothedMs: this.probes.smoothedNs / 1e6,
        targetMs: this.calibration.harmNs / 1e6,
        slowShare: this.slowShare,
        tailShare: this.tailShare,
        calibrations: this.calibration.count,
        boost: this.boost.report(this.nowNs()),
      },
    };
  }
}
