/** The clock, the progress reports and the latency summary of a job. */
import type { LatencyHistogram } from '../throttle/histogram.js';
import type { JobControl } from './options.js';

/** Seconds since it was made, from the monotonic clock. */
export class Stopwatch {
  readonly #start = process.hrtime.bigint();

  seconds(): number {
    return Number(process.hrtime.bigint() - this.#start) / 1e9;
  }
}

/**
 * Calls a job's onProgress at most once per progressIntervalMs (and always
 * when forced), with a report made only when one is due.
 */
export class ProgressReporter<P> {
  readonly #control: JobControl<P>;
  readonly #clock: Stopwatch;
  readonly #make: (elapsedSeconds: number) => P;
  #last: number;

  /** `firstAtOnce`: the first report is due at once, not one interval after the start. */
  constructor(control: JobControl<P>, clock: Stopwatch, make: (elapsedSeconds: number) => P, firstAtOnce = true) {
    this.#control = control;
    this.#clock = clock;
    this.#make = make;
    this.#last = firstAtOnce ? -Infinity : 0;
  }

  report(force = false): void {
    const onProgress = this.#control.onProgress;
    if (!onProgress) return;
    const t = this.#clock.seconds();
    if (!force && (t - this.#last) * 1000 < this.#control.progressIntervalMs) return;
    this.#last = t;
    onProgress(this.#make(t));
  }
}

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Count, mean and percentiles of a job's latencies, in ms rounded to the microsecond. */
export function summarizeLatency(h: LatencyHistogram): LatencySummary {
  const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3;
  return {
    count: h.count,
    meanMs: ms(h.mean),
    p50Ms: ms(h.percentile(50)),
    p99Ms: ms(h.percentile(99)),
    maxMs: ms(h.max),
  };
}
