/** The clock and the progress reports of a job. */
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
