/**
 * Progress on stderr (a terminal bar, or one JSON object a line for
 * machines: --progress ndjson) and number formatting for the CLI.
 */
import { createRequire } from 'node:module';
import type cliProgressModule from 'cli-progress';
import { Option, type Command } from 'commander';
import type { ThrottleState } from '../index.js';
import { SCHEMA_VERSION } from './output.js';

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

export type ProgressMode = 'ndjson' | 'bar' | 'none';

/** Adds --progress ndjson|bar|none and --no-progress (the same as --progress none). */
export function addProgressOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--progress <mode>',
        'progress on stderr: ndjson (one JSON object a line), bar or none (default: a bar on a terminal without --json, else none)',
      ).choices(['ndjson', 'bar', 'none']),
    )
    .option('--no-progress', 'no progress (--progress none)');
}

/** The progress a command's flags ask for. */
export function progressMode(o: Record<string, unknown>): ProgressMode {
  if (o.progress === false) return 'none';
  if (typeof o.progress === 'string') return o.progress as ProgressMode;
  return o.json !== true && process.stderr.isTTY ? 'bar' : 'none';
}

/** What a job reports: bytes so far and in all, its clock and the throttle's state. */
export interface JobProgress {
  bytesDone: number;
  bytesTotal: number | null;
  bytesPerSecond: number;
  elapsedSeconds: number;
  throttle?: ThrottleState | undefined;
}

/** One line of --progress ndjson on stderr. */
export function writeEvent(command: string, type: string, fields: Record<string, unknown>): void {
  process.stderr.write(`${JSON.stringify({ schemaVersion: SCHEMA_VERSION, type, command, ...fields })}\n`);
}

/**
 * A job's progress as its command's flags ask: a bar, ndjson lines, or
 * nothing (then `onProgress` is undefined and the job makes no reports).
 */
export class ProgressOutput<P> {
  readonly mode: ProgressMode;
  readonly #command: string;
  readonly #convert: (p: P) => JobProgress & { info: string; extra?: Record<string, unknown> };
  #bar: ProgressBar | undefined;
  #last: JobProgress | undefined;

  constructor(
    o: Record<string, unknown>,
    command: string,
    convert: (p: P) => JobProgress & { info: string; extra?: Record<string, unknown> },
  ) {
    this.mode = progressMode(o);
    this.#command = command;
    this.#convert = convert;
    if (this.mode === 'bar') this.#bar = new ProgressBar();
  }

  /** The job's onProgress callback, or undefined without progress. */
  get onProgress(): ((p: P) => void) | undefined {
    return this.mode === 'none' ? undefined : (p: P) => this.update(p);
  }

  update(p: P): void {
    const { info, extra, ...q } = this.#convert(p);
    this.#last = q;
    if (this.#bar) this.#bar.update(q.bytesDone, q.bytesTotal ?? q.bytesDone, info);
    else if (this.mode === 'ndjson') {
      writeEvent(this.#command, 'progress', {
        elapsedSeconds: q.elapsedSeconds,
        bytesDone: q.bytesDone,
        bytesTotal: q.bytesTotal,
        bytesPerSecond: q.bytesPerSecond,
        ...(q.throttle ? { throttle: { ...q.throttle, throttled: q.throttle.delayMs > 0 } } : {}),
        ...extra,
      });
    }
  }

  /** Ends the bar, or writes the ndjson `end` line (ok: the job succeeded). */
  finish(ok: boolean): void {
    this.#bar?.stop();
    if (this.mode === 'ndjson') {
      writeEvent(this.#command, 'end', {
        ok,
        ...(this.#last ? { elapsedSeconds: this.#last.elapsedSeconds, bytesDone: this.#last.bytesDone } : {}),
      });
    }
  }

  /** Runs the job, then ends the progress whether it succeeded or not. */
  async around<T>(job: Promise<T>): Promise<T> {
    try {
      const r = await job;
      this.finish(true);
      return r;
    } catch (err) {
      this.finish(false);
      throw err;
    }
  }
}

/**
 * A job's throughput as it happened: bytes actually read and written per
 * wall-clock second, beside the size of the source (which is not a rate).
 */
export interface Figures {
  sourceSize: number;
  seconds: number;
  /** null: not counted (restore reads compressed chunks from the repository). */
  bytesRead: number | null;
  bytesWritten: number;
  readBytesPerSecond: number | null;
  writeBytesPerSecond: number;
}

export function jobFigures(
  sourceSize: number,
  seconds: number,
  bytesRead: number | null,
  bytesWritten: number,
): Figures {
  const per = (n: number): number => (seconds > 0 ? n / seconds : 0);
  return {
    sourceSize,
    seconds,
    bytesRead,
    bytesWritten,
    readBytesPerSecond: bytesRead === null ? null : per(bytesRead),
    writeBytesPerSecond: per(bytesWritten),
  };
}

/** "0.42 s; read 6.80 MiB (17.0 MB/s), wrote 6.80 MiB (17.0 MB/s)" */
export function formatFigures(f: Figures): string {
  const read =
    f.bytesRead === null ? '' : `read ${formatBytes(f.bytesRead)} (${formatRate(f.readBytesPerSecond ?? 0)}), `;
  return `${f.seconds.toFixed(2)} s; ${read}wrote ${formatBytes(f.bytesWritten)} (${formatRate(f.writeBytesPerSecond)})`;
}
