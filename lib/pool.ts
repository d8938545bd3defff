/**
 * The addon's worker threads: hashing, compression, chunk writes, probe reads
 * and file-system parsing run on them, not on libuv's thread pool, so a host
 * process keeps its own pool (file, DNS and crypto calls) for itself.
 */
import { native } from './native.js';
import { integerOption, invalidOption } from './options.js';

/** Sets the number of worker threads (1 to 256). Default: the number of online CPUs, at least 2, at most 16. */
export function setWorkerThreads(count: number): void {
  if (count === undefined) invalidOption('count', 'an integer from 1 to 256', count);
  native.setPoolThreads(integerOption('count', count, 1, 1, 256));
}

/** The worker pool's size and the number of tasks it has run. */
export function workerPoolStats(): { threads: number; executed: number } {
  return native.poolStats();
}
