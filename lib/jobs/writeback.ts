/**
 * Early writeback for jobs that write an image through the page cache (image
 * and restore into a file): every `step` bytes written, the kernel is asked
 * to start writing the file's dirty pages (sync_file_range
 * SYNC_FILE_RANGE_WRITE, which does not wait). Without it the final fsync
 * finds the whole image dirty and the device idles while the job reads; with
 * it, writing overlaps reading.
 *
 * The step decides how the writes reach the disk: a large one lets dirty
 * pages pile up and go out in bursts (fast, and what an unthrottled job
 * wants); a small one sends each block out soon after it was written, so the
 * writes follow the pace the throttle set for the reads instead of arriving
 * as a burst that production's requests queue behind. A throttled job passes
 * its throttle's `writebackStepBytes` (see JobThrottle).
 */
import { native } from '../native.js';
import { UNPACED_WRITEBACK_STEP_BYTES } from '../throttle/limits.js';

export class EarlyWriteback {
  #written = 0;
  #mark = 0;
  readonly #step: () => number;
  constructor(
    private readonly fd: number,
    step: number | (() => number) = UNPACED_WRITEBACK_STEP_BYTES,
  ) {
    this.#step = typeof step === 'number' ? () => step : step;
  }

  /** Counts `bytes` more written; starts writeback when another step is dirty. */
  wrote(bytes: number): void {
    this.#written += bytes;
    if (this.#written - this.#mark >= this.#step()) {
      this.#mark = this.#written;
      native.startWriteback(this.fd, 0, 0);
    }
  }
}
