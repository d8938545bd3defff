/** `off`: full queue depth, largest requests, no delay. Still measures and reports. */
import { BaseController } from './base-controller.js';
import type { ThrottleDecision } from './types.js';

export class OffController extends BaseController {
  readonly name = 'off' as const;
  protected onSample(): void {}
  protected current(): ThrottleDecision {
    return { delayMs: 0, queueDepth: this.options.maxQueueDepth, blockSize: this.options.maxBlockSize };
  }
}
