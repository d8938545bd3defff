import { WindowController } from './window-controller.js';

/**
 * `parda`: the window rule of PARDA (Gulati et al., FAST'09),
 *     W ← (1 − γ) · W + γ · (T / L · W + β)
 * with L the round's mean latency. Its fixed point is L = T · W / (W − β):
 * the latency settles just above T, and a window that cannot reach T
 * (production alone is slower) settles near β instead of at zero. The ratio
 * T / L is capped at 2 so that one implausibly fast round cannot make the
 * window jump to its maximum.
 */
export class PardaController extends WindowController {
  readonly name = 'parda' as const;
  protected nextWindow(meanNs: number): number {
    const { gamma, betaBytes } = this.options.parda;
    const ratio = Math.min(2, this.targetNs / meanNs);
    return (1 - gamma) * this.window + gamma * (ratio * this.window + betaBytes);
  }
}
