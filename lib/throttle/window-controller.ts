import type { ThrottleOptions } from './controller-options.js';
import { BaseController } from './base-controller.js';
import { clamp, pacedDecision, pacingLatencyNs } from './decision.js';
import type { ThrottleDecision } from './types.js';

/**
 * Base of the window controllers (aimd, parda). Their state is one number,
 * the window W: the bytes the job may keep in flight. windowDecision() turns
 * W into a decision, shrinking the knobs in order of cost to throughput:
 * first the queue depth (at the largest request size), then the request size
 * (at the smallest queue depth), and only then a pacing delay.
 *
 * They act once per round, not per sample: a round ends when as many samples
 * have come back as there were blocks in flight when it began (about one
 * round trip, like TCP's once-per-RTT rule), and its mean latency is the
 * signal. Waiting for the blocks issued under the previous window keeps a
 * controller from reacting twice to the same queue.
 */
export abstract class WindowController extends BaseController {
  protected window: number;
  protected readonly minWindow: number;
  protected readonly maxWindow: number;
  private decision: ThrottleDecision;
  private roundLength = 1;
  private roundSamples = 0;
  private roundSumNs = 0;

  constructor(options: ThrottleOptions) {
    super(options);
    const o = this.options;
    this.maxWindow = o.maxQueueDepth * o.maxBlockSize;
    // The smallest window paces smallest blocks at 1/64 of their natural rate;
    // maxDelayMs usually binds before that.
    this.minWindow = (o.minQueueDepth * o.minBlockSize) / 64;
    // Start with the smallest queue depth of full-size blocks: cheap on an
    // idle device (one request in flight) and quickly grown from there.
    this.window = o.minQueueDepth * o.maxBlockSize;
    this.decision = this.windowDecision();
    this.roundLength = this.decision.queueDepth;
  }

  protected onSample(latencyNs: number): void {
    this.roundSamples++;
    this.roundSumNs += latencyNs;
    if (this.decision.delayMs > 0) {
      // While pacing, keep the delay in step with the latest latency estimate.
      this.decision = this.windowDecision();
    }
    if (this.roundSamples < this.roundLength) return;
    const mean = this.roundSumNs / this.roundSamples;
    this.roundSamples = 0;
    this.roundSumNs = 0;
    const before = this.decision.queueDepth;
    this.window = clamp(this.nextWindow(mean), this.minWindow, this.maxWindow);
    this.decision = this.windowDecision();
    // The next round waits for the blocks in flight now (issued under the
    // old window) and for a full window of new ones.
    this.roundLength = Math.max(before, this.decision.queueDepth);
  }

  protected current(): ThrottleDecision {
    return this.decision;
  }

  /** The window after a round whose mean latency was `meanNs`. */
  protected abstract nextWindow(meanNs: number): number;

  /** W → (queue depth, request size, delay). */
  private windowDecision(): ThrottleDecision {
    const o = this.options;
    const w = this.window;
    const fullBlocks = w / o.maxBlockSize;
    if (fullBlocks >= o.minQueueDepth) {
      return { delayMs: 0, queueDepth: Math.round(fullBlocks), blockSize: o.maxBlockSize };
    }
    const perRequest = w / o.minQueueDepth;
    if (perRequest >= o.minBlockSize) {
      return { delayMs: 0, queueDepth: o.minQueueDepth, blockSize: perRequest };
    }
    return pacedDecision(o, w, pacingLatencyNs(this.latency));
  }
}
