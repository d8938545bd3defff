/** Terminal progress bar and number formatting for the CLI. */
import cliProgress from 'cli-progress';

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
  readonly #bar: cliProgress.SingleBar;
  #started = false;

  constructor() {
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
