/** Decision arithmetic shared by the controllers: bounds and pacing. */
import type { ResolvedThrottleOptions } from './controller-options.js';
import type { LatencyEstimator } from './estimator.js';
import type { ThrottleDecision } from './types.js';

export function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/**
 * Puts a decision inside the bounds. A non-finite value can only come from a
 * bug, and is replaced by the most cautious choice (longest delay, smallest
 * queue depth and request).
 */
export function boundDecision(d: ThrottleDecision, o: ResolvedThrottleOptions): ThrottleDecision {
  const delayMs = Number.isFinite(d.delayMs) ? clamp(d.delayMs, 0, o.maxDelayMs) : o.maxDelayMs;
  const queueDepth = Number.isFinite(d.queueDepth)
    ? clamp(Math.round(d.queueDepth), o.minQueueDepth, o.maxQueueDepth)
    : o.minQueueDepth;
  const blockSize = Number.isFinite(d.blockSize)
    ? clamp(Math.floor(d.blockSize / o.alignment) * o.alignment, o.minBlockSize, o.maxBlockSize)
    : o.minBlockSize;
  return { delayMs, queueDepth, blockSize };
}

/**
 * The latency L that paces blocks: the median of the last 9 samples, not the
 * EWMA. One sample from a stall (the process stopped or descheduled for 2 s,
 * a device that hung once) moves the EWMA to ~0.4 s; paced blocks then wait
 * the largest delay each, and with one sample per wait the EWMA needs ~40
 * samples, i.e. many seconds, to forget it: the job stands still for
 * seconds after every stall. The median of the last few samples forgets it
 * after a few; by count, not age, because after a stall every sample in a
 * time window is a late one.
 */
export function pacingLatencyNs(e: LatencyEstimator): number {
  return e.recentMedianNs(9);
}

/**
 * A window W below minQueueDepth smallest blocks: smallest blocks, paced.
 * With n = W / minBlockSize blocks in flight on average and latency L each,
 * Little's law gives one block every L / n.
 */
export function pacedDecision(o: ResolvedThrottleOptions, w: number, latencyNs: number): ThrottleDecision {
  const n = w / o.minBlockSize;
  return { delayMs: latencyNs / n / 1e6, queueDepth: o.minQueueDepth, blockSize: o.minBlockSize };
}
