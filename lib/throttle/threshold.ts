import type { ThrottleOptions } from './controller-options.js';
import { BaseController } from './base-controller.js';
import { clamp } from './decision.js';
import type { ThrottleDecision } from './types.js';

/**
 * `threshold`: the classic rule. The throttling value is how far a block's
 * latency L is above the threshold T, relative to it:
 *     e = clamp((L − T) / T, −1, 4)
 * The delay before the next block is an integral part I, which remembers
 * how long the latency has been above or below T, times a proportional
 * factor from the current throttling value (ki, kp: gains; Δt: time since
 * the previous sample):
 *     ln I ← ln I + ki · e · min(Δt, τ) / τ,   τ = max(L, T),
 *                                            I within [T / 1000, maxDelay]
 *     d = I · exp(kp · e)                    (0 while I is at its floor)
 * Working on the logarithm makes the loop independent of the device's
 * speed: a change of d by a given factor changes our rate by that factor,
 * whatever the rate. τ is the loop's dead time (a block issued now reports
 * back after L), so the integral moves by at most e^(4·ki) per round trip.
 * The integral brings the latency to T, where a purely proportional rule
 * would settle above it; the proportional factor damps
 * the loop (the device queue integrates the rate difference, so an integral
 * alone would oscillate). Integrating over time rather than per sample makes
 * the response independent of how many blocks are in flight. Queue depth and
 * request size stay at their maxima, as in the commercial tools.
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
