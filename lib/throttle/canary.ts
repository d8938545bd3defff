import { BaseController } from './base-controller.js';
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
 * idle probes' `quantile` (default their 90th percentile), and a is the share of
 * idle probes slower than H, at least 5 % (with a fixed target H, a = 5 %). Per round of `probesPerRound` probes, f (an
 * EWMA, α = 0.3 per round) is the share slower than H, and
 *     W ← (1 − γ) · W + γ · (r · W + β),   r = clamp((a + ε) / (f + ε), ¼, 2)
 * with ε = 0.05: PARDA's rule (Gulati et al., FAST'09) with the share of slow
 * probes in place of the latency. The tail rule takes the smaller of r and
 * the same ratio for the share of probes slower than `tailFactor` · H (2 · H,
 * allowed `tailShare`, 2 %): production's bound is on its p99, and the share
 * above H can stay at its idle level while the tail grows. β (4 KiB) is also
 * the window's floor (r ≥ ¼: W ≥ β / (1 − ¼)). One probe slower than 4 · H
 * (a burst of production meeting a large window) halves W at once, once per
 * round.
 * H comes from idle probes in calibration pauses: before the job, and
 * again every `calibrateEveryMs` (canary-calibration.ts), so it follows a
 * device whose own speed drifts.
 * W becomes the deepest queue (up to maxQueueDepth) of the smallest requests
 * that hold it: at equal throughput, a production request that lands behind
 * a small request of ours waits for less. Below the smallest block's worth,
 * blocks are paced (Little's law).
 * Without probes it has no signal and keeps its window (JobThrottle runs
 * `parda` instead when it has nothing to probe).
 */
export class CanaryController extends BaseController {
  readonly name = 'canary' as const;
  /** Probe latency: smoothed value and window percentiles. */
  readonly probes: LatencyEstimator;
  private window: number;
  private readonly minWindow: number;
  private readonly maxWindow: number;
  private readonly calibration: HarmCalibration;
  /** EWMA of the share of probes slower than the harm latency. */
  private slowShare = 0;
  private roundSamples = 0;
  private roundSlow = 0;
  private roundTail = 0;
  /** EWMA of the share of probes slower than tailFactor × harm. */
  private tailShare = 0;
  private pausedAtNs: number | undefined;
  private probeCount = 0;
  private lastCutAt = -Infinity;
  private pause: 'calibrate' | 'check' | undefined;
  /** Probes seen with the storage's I/O count; quiet checks need them. */
  private deviceCounters = false;
  private nextCheckNs: number | undefined;
  /** First and last probe of the current pause's quiet window. */
  private quietFrom: { atNs: number; ios: number; probes: number } | undefined;
  private quietTo: { atNs: number; ios: number; probes: number } | undefined;
  private othersSeen = false;
  private lastWrites: number | undefined;
  private busyWrites = 0;
  private boostedSinceNs: number | undefined;
  /** Quiet checks in a row while not boosted. */
  private quietChecks = 0;
  private boostedNs = 0;
  private checks = 0;
  private busyChecks = 0;
  /**
   * The window at the last quiet check that found someone else while not
   * boosted: what the rule held with production there. Until one, the
   * starting window.
   */
  private busyWindow: number;

  constructor(options: ThrottleOptions) {
    super(options);
    const o = this.options;
    this.probes = new LatencyEstimator(o.estimator);
    this.maxWindow = o.maxQueueDepth * o.maxBlockSize;
    this.minWindow = (o.minQueueDepth * o.minBlockSize) / 64;
    // Start small (four smallest blocks) and grow: the rule at most
    // multiplies W by 1.5 per round, so full speed is under a second away.
    this.window = clamp(4 * o.minBlockSize, this.minWindow, this.maxWindow);
    this.busyWindow = this.window;
    // Until a calibration says otherwise (and for good with a fixed target),
    // no probe is expected to be slower than H.
    const c = o.canary;
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
  }

  override probeState(): { latencyNs: number; targetNs: number } {
    return { latencyNs: this.probes.smoothedNs, targetNs: this.calibration.harmNs };
  }

  protected override nowNs(): number {
    return Math.max(this.latency.nowNs, this.probes.nowNs);
  }

  protected onSample(): void {}

  override observeProbe(sample: LatencySample): void {
    const s: Partial<LatencySample> = sample ?? {};
    if (this.probes.observe(s.latencyNs as number, s.atNs) === 'invalid') return;
    this.probeCount++;
    const v = this.probes.lastNs;
    const now = this.nowNs();
    const o = this.options;
    const ios = typeof s.deviceIos === 'number' && Number.isFinite(s.deviceIos) && s.deviceIos >= 0 ? s.deviceIos : undefined;
    if (ios !== undefined) this.deviceCounters = true;
    const writes = typeof s.deviceWrites === 'number' && Number.isFinite(s.deviceWrites) && s.deviceWrites >= 0 ? s.deviceWrites : undefined;
    const wroteSinceLast = writes !== undefined && this.lastWrites !== undefined && writes > this.lastWrites;
    this.lastWrites = writes;
    if (this.pausedAtNs !== undefined) {
      // Probes that completed after our blocks in flight drained are idle
      // ones; the storage's I/O counted between them is the probes' and others'.
      const settleNs =
        this.pause === 'calibrate'
          ? this.calibration.settleNs(this.latency.smoothedNs)
          : Math.min(Math.max(1.25 * this.latency.recentMedianNs(), 1e6), 20e6);
      if (now - this.pausedAtNs >= settleNs) {
        if (this.pause === 'calibrate') this.calibration.addIdle(v);
        if (ios !== undefined) {
          this.quietFrom ??= { atNs: now, ios, probes: this.probeCount };
          this.quietTo = { atNs: now, ios, probes: this.probeCount };
          if (ios - this.quietFrom.ios > this.probeCount - this.quietFrom.probes) this.othersSeen = true;
        }
      }
      const quietNs = this.quietTo && this.quietFrom ? this.quietTo.atNs - this.quietFrom.atNs : 0;
      const needNs = this.quietNeededNs();
      const done =
        this.pause === 'calibrate'
          ? this.calibration.done(now - this.pausedAtNs)
          : this.othersSeen || quietNs >= needNs || now - this.pausedAtNs >= needNs + 50e6;
      if (done) this.endPause(now);
      return;
    }
    if (this.calibration.due(now)) {
      this.startPause('calibrate', now);
      return;
    }
    // A write we did not make is someone else at work: no boost begins on
    // the quiet checks before it, and a boost stops now rather than at the
    // next check.
    if (wroteSinceLast) this.quietChecks = 0;
    if (this.boostedSinceNs !== undefined && wroteSinceLast) {
      this.busyWrites++;
      this.endBoost(now);
      this.nextCheckNs = now + o.canary.checkEveryMs * 1e6;
    }
    if (o.canary.boost && this.deviceCounters) {
      this.nextCheckNs ??= now;
      if (now >= this.nextCheckNs) {
        this.startPause('check', now);
        return;
      }
    }
    // Boosted, the probes wait behind our own deep queue whether or not
    // anyone else is there: they say nothing, and the window rule rests
    // until a quiet check ends the boost.
    if (this.boostedSinceNs !== undefined) return;
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
    this.roundSamples = 0;
    this.roundSlow = 0;
    this.roundTail = 0;
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
    this.window = clamp((1 - gamma) * this.window + gamma * (ratio * this.window + o.canary.betaBytes), this.minWindow, this.maxWindow);
  }

  /**
   * Quiet time a check must see to boost: long to start (a light load of a
   * few requests per second must show itself: at 20 IOPS, 200 ms pass
   * without a request once in 55 tries), short to stay boosted (any load
   * found ends the boost).
   */
  private quietNeededNs(): number {
    return (this.boostedSinceNs !== undefined ? THROTTLE_DEFAULTS.canaryStayQuietMs : THROTTLE_DEFAULTS.canaryEnterQuietMs) * 1e6;
  }

  private startPause(kind: 'calibrate' | 'check', now: number): void {
    this.pausedAtNs = now;
    this.pause = kind;
    if (kind === 'calibrate') this.calibration.begin();
    this.quietFrom = undefined;
    this.quietTo = undefined;
    this.othersSeen = false;
    this.roundSamples = 0;
    this.roundSlow = 0;
    this.roundTail = 0;
  }

  private endPause(now: number): void {
    const o = this.options;
    if (this.pause === 'calibrate') this.calibration.finish(now);
    // Every pause is a quiet check: with our blocks drained, the storage's
    // I/O beyond our probes' is someone else's. None at all over the quiet
    // window: boost; any: back to the window rule (where it was before).
    if (o.canary.boost && this.quietFrom && this.quietTo) {
      const quietNs = this.quietTo.atNs - this.quietFrom.atNs;
      this.checks++;
      if (this.othersSeen) {
        this.busyChecks++;
        this.quietChecks = 0;
        if (this.boostedSinceNs === undefined) this.busyWindow = this.window;
        this.endBoost(now);
      } else if (this.pause === 'check') {
        // Quiet long enough: boost (or stay boosted). Not long enough (probes
        // too slow to fill the window): not boosted.
        if (quietNs < this.quietNeededNs()) {
          this.quietChecks = 0;
          this.endBoost(now);
        } else if (this.boostedSinceNs === undefined && ++this.quietChecks >= o.canary.boostQuietChecks) {
          this.boostedSinceNs = now;
          this.quietChecks = 0;
        }
      }
    }
    // Boosted, or one quiet check short of it: the next check soon.
    const soon = this.boostedSinceNs !== undefined || this.quietChecks > 0;
    this.nextCheckNs = now + (soon ? o.canary.boostCheckEveryMs : o.canary.checkEveryMs) * 1e6;
    this.pausedAtNs = undefined;
    this.pause = undefined;
  }

  /**
   * Someone else is back (a write we did not make, or a check that was not
   * quiet). The window was last set by the rule before the boost, while the
   * storage was quiet and the window grew up to ×1.5 a round until a check
   * started the boost (up to 700 ms): resuming there meets production's
   * first requests with a deep queue for the rounds it takes to shrink.
   * Resume from the window the rule held the last time a check found
   * production instead.
   */
  private endBoost(now: number): void {
    if (this.boostedSinceNs === undefined) return;
    this.boostedNs += Math.max(0, now - this.boostedSinceNs);
    this.boostedSinceNs = undefined;
    if (this.options.canary.resumeBusyWindow) this.window = Math.min(this.window, this.busyWindow);
  }

  protected current(): ThrottleDecision {
    const o = this.options;
    if (this.pausedAtNs !== undefined) {
      // Calibrating: nothing new of ours until the pause ends.
      return { delayMs: o.maxDelayMs, queueDepth: o.minQueueDepth, blockSize: o.minBlockSize };
    }
    if (this.boostedSinceNs !== undefined) {
      return { delayMs: 0, queueDepth: clamp(o.canary.boostQueueDepth, o.minQueueDepth, o.maxQueueDepth), blockSize: o.maxBlockSize };
    }
    const w = this.window;
    if (w >= o.minQueueDepth * o.minBlockSize) {
      // The deepest queue of the smallest requests that holds W: a production
      // request that lands behind one of ours waits for less.
      const align = o.alignment;
      const size = clamp(Math.floor(w / o.maxQueueDepth / align) * align, o.minBlockSize, o.maxBlockSize);
      return { delayMs: 0, queueDepth: clamp(Math.round(w / size), o.minQueueDepth, o.maxQueueDepth), blockSize: size };
    }
    // Paced with our own smoothed latency; before any, the probes'.
    return pacedDecision(o, w, this.latency.count > 0 ? pacingLatencyNs(this.latency) : this.probes.smoothedNs || this.calibration.harmNs);
  }

  override report(): ThrottleReport {
    const base = super.report();
    return {
      ...base,
      probes: {
        count: this.probeCount,
        invalid: this.probes.invalid,
        smoothedMs: this.probes.smoothedNs / 1e6,
        targetMs: this.calibration.harmNs / 1e6,
        slowShare: this.slowShare,
        tailShare: this.tailShare,
        calibrations: this.calibration.count,
        boost: {
          checks: this.checks,
          busy: this.busyChecks,
          endedByWrites: this.busyWrites,
          boostedMs: (this.boostedNs + (this.boostedSinceNs !== undefined ? Math.max(0, this.nowNs() - this.boostedSinceNs) : 0)) / 1e6,
          enabled: this.options.canary.boost,
          deviceCounters: this.deviceCounters,
        },
      },
    };
  }
}
