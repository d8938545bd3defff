/** Terminal progress bar and number formatting for the CLI. */
import { createRequire } from 'node:module';
import type cliProgressModule from 'cli-progress';

// Loaded on the first bar only: a run with --json or without a terminal
// (scripts, cron) does not pay for loading it.
const require = createRequire(import.meta.url);
let cliProgress: typeof cliProgressModule | undefined;

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

export class ProgressBar {
  readonly #bar: cliProgressModule.SingleBar;
  #started = false;

  constructor() {
    cliProgress ??= require('cli-progress') as typeof cliProgressModule;
    this.#bar = new cliProgress.SingleBar(
      {
        format: '{bar} {percentage}% | {done} / {size} | {info}',
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: true,
        barsize: 30,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  update(done: number, total: number, info: string): void {
    const payload = { done: formatBytes(done), size: formatBytes(total), info };
    if (!this.#started) {
      this.#bar.start(total, done, payload);
      this.#started = true;
    } else {
      this.#bar.update(done, payload);
    }
  }

  stop(): void {
    if (this.#started) this.#bar.stop();
  }
}

/** A progress bar on stderr, unless --json or --no-progress was given or stderr is not a terminal. */
export function progressBarFor(o: Record<string, unknown>): ProgressBar | undefined {
  return o.json !== true && o.progress !== false && process.stderr.isTTY ? new ProgressBar() : undefined;
}
