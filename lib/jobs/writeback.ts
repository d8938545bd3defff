/**
 * Early writeback for jobs that write an image through the page cache (image
 * and restore into a file): every STEP bytes written, the kernel is asked to
 * start writing the file's dirty pages (sync_file_range SYNC_FILE_RANGE_WRITE,
 * which does not wait). Without it the final fsync finds the whole image dirty
 * and the device idles while the job reads; with it, writing overlaps reading.
 */
import { native } from '../native.js';

/** Bytes written between two writeback starts. */
const WRITEBACK_STEP = 64 * 1024 * 1024;

export class EarlyWriteback {
  #written = 0;
  #mark = 0;
  constructor(private readonly fd: number) {}

  /** Counts `bytes` more written; starts writeback when another STEP is dirty. */
  wrote(bytes: number): void {
    this.#written += bytes;
    if (this.#written - this.#mark >= WRITEBACK_STEP) {
      this.#mark = this.#written;
      native.startWriteback(this.fd, 0, 0);
    }
  }
}
