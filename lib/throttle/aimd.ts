import { WindowController } from './window-controller.js';

/**
 * `aimd`: additive increase, multiplicative decrease of the window.
 * After each round with mean latency L:
 *     L > T:  W ← max(Wmin, b · W)          (b = decreaseFactor, 0.5)
 *     L ≤ T:  W ← min(Wmax, W + a)
 * where a is one largest block while the window is in queue-depth territory
 * (so the queue depth grows by one per round) and `increaseBytes` (one
 * smallest block) while requests are shrunk or paced.
 */
export class AimdController extends WindowController {
  readonly name = 'aimd' as const;
  protected nextWindow(meanNs: number): number {
    const o = this.options;
    if (meanNs > this.targetNs) return this.window * o.aimd.decreaseFactor;
    const step = this.window >= o.minQueueDepth * o.maxBlockSize ? o.maxBlockSize : o.aimd.increaseBytes;
    return this.window + step;
  }
}
