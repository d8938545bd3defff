import type { ThrottleOptions } from './controller-options.js';
import { BaseController } from './base-controller.js';
import { clamp } from './decision.js';
import type { ThrottleDecision } from './types.js';

/**
 * `threshold`: the classic rule. Every block's latency is measured and
 * smoothed (the estimator's EWMA, L̂); the throttling value is how far L̂ is
 * above the threshold T, relative to it:
 *     e = (L̂ − T) / T
 *
 * Law 'proportional' (the classic rule as written) delays the next block by a time
 * proportional to that value, and not at all at or below the threshold:
 *     d = proportionalGain · e · T   for e > 0   (the excess itself at gain 1)
 *     d = 0                          for e ≤ 0
 * It settles above T (it delays only while latency is too high), and with
 * the queue depth at its maximum the job's own queue alone can hold L̂
 * above a low T on an idle device.
 *
 * Law 'integral' (the default) brings the latency *to* T: the delay is an integral part I,
 * which remembers how long the latency has been above or below T, times a
 * proportional factor (ki, kp: gains; Δt: time since the previous sample;
 * e clamped to [−1, 4] and taken per block):
 *     ln I ← ln I + ki · e · min(Δt, τ) / τ,   τ = max(L, T),
 *                                            I within [T / 1000, maxDelay]
 *     d = I · exp(kp · e)                    (0 while I is at its floor)
 * Working on the logarithm makes the loop independent of the device's
 * speed; τ is the loop's dead time (a block issued now reports back after
 * L), so the integral moves by at most e^(4·ki) per round trip. The
 * proportional factor damps the loop (the device queue integrates the rate
 * difference, so an integral alone would oscillate).
 *
 * Under both laws queue depth and request size stay at their maxima, as in
 * the commercial tools.
 */
export class ThresholdController extends BaseController {
  readonly name = 'threshold' as const;
  private readonly floorMs: number;
  private integralMs: number;
  private delayMs = 0;
  private lastAtNs: number | undefined;

  constructor(options: ThrottleOptions) {
    super(options);
    this.floorMs = Math.min(this.options.targetLatencyMs / 1000, this.options.maxDelayMs);
    this.integralMs = this.floorMs;
  }

  protected onSample(latencyNs: number): void {
    const o = this.options;
    if (o.threshold.law === 'proportional') {
      const e = (this.latency.smoothedNs - this.targetNs) / this.targetNs;
      this.delayMs = e > 0 ? Math.min(o.threshold.proportionalGain * e * o.targetLatencyMs, o.maxDelayMs) : 0;
      return;
    }
    const now = this.latency.nowNs;
    const dtNs = this.lastAtNs === undefined ? 0 : now - this.lastAtNs;
    this.lastAtNs = now;
    const e = clamp((latencyNs - this.targetNs) / this.targetNs, -1, 4);
    // Time is counted in units of the loop's dead time τ = max(L, T): a
    // block issued now reports back after about L. Counting in τ makes the
    // integral move by at most a factor e^(4·ki) per round trip however many
    // samples come back in it, so a deep queue of old blocks cannot wind it
    // up; a sample after a long pause counts for one τ at most.
    const tau = Math.max(latencyNs, this.targetNs);
    const step = (o.threshold.integralGain * e * Math.min(dtNs, tau)) / tau;
    this.integralMs = clamp(this.integralMs * Math.exp(step), this.floorMs, o.maxDelayMs);
    this.delayMs =
      this.integralMs <= this.floorMs ? 0 : clamp(this.integralMs * Math.exp(o.threshold.gain * e), 0, o.maxDelayMs);
  }

  protected current(): ThrottleDecision {
    return { delayMs: this.delayMs, queueDepth: this.options.maxQueueDepth, blockSize: this.options.maxBlockSize };
  }
}
