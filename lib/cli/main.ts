#!/usr/bin/env node
/**
 * The `lowtide` command. Exit codes: 0 success, 1 failure (one line on
 * stderr), 2 usage error, 130 interrupted.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { createRequire } from 'node:module';
import { LowtideError, imageSource, ioUringAvailable, openSource, parseSize, type ImageSummary } from '../index.js';
import { formatBytes, formatRate, ProgressBar } from './progress.js';

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

/** Errors that mean "the command line is wrong" rather than "the work failed". */
class UsageError extends Error {}

function sizeArg(name: string) {
  return (text: string): number => {
    try {
      return parseSize(name, text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

function intArg(name: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return n;
  };
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function withInterrupt<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return run(controller.signal).finally(() => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  });
}

function printImageSummary(s: ImageSummary): void {
  const lines = [
    `imaged ${s.source} -> ${s.output}`,
    `  size        ${formatBytes(s.size)}`,
    `  read        ${formatBytes(s.bytesRead)}  (${s.direct ? 'O_DIRECT' : 'buffered'}, ${s.engine}, ${formatBytes(s.blockSize)} x QD ${s.queueDepth})`,
    `  written     ${formatBytes(s.bytesWritten)}`,
    `  holes       ${formatBytes(s.bytesSkipped)} (all-zero blocks not written)`,
    `  time        ${s.seconds.toFixed(2)} s, ${formatRate(s.size / Math.max(s.seconds, 1e-9))}`,
    `  latency     p50 ${s.latency.p50Ms.toFixed(3)} ms, p99 ${s.latency.p99Ms.toFixed(3)} ms, max ${s.latency.maxMs.toFixed(3)} ms`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('lowtide')
    .description('Low-impact, image-level backup and replication')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('image')
    .description('copy a file or block device to a sparse image file')
    .argument('<source>', 'file or block device to read (opened read-only)')
    .argument('<output>', 'image file to write')
    .addOption(new Option('--block-size <size>', 'read request size').default(1 << 20, '1M').argParser(sizeArg('--block-size')))
    .addOption(new Option('--queue-depth <n>', 'reads in flight').default(32).argParser(intArg('--queue-depth', 1, 1024)))
    .addOption(new Option('--engine <name>', 'read engine').choices(['auto', 'io_uring', 'threads']).default('auto'))
    .addOption(new Option('--direct <mode>', 'O_DIRECT use').choices(['auto', 'on', 'off']).default('auto'))
    .option('--no-sparse', 'write all-zero blocks instead of leaving holes')
    .option('-f, --force', 'replace an existing output file', false)
    .option('--json', 'print a machine-readable summary', false)
    .option('--no-progress', 'no progress bar')
    .action(async (source: string, output: string, o: Record<string, unknown>) => {
      const json = o.json === true;
      const bar = !json && o.progress !== false && process.stderr.isTTY ? new ProgressBar() : undefined;
      const summary = await withInterrupt((signal) =>
        imageSource(source, output, {
          blockSize: o.blockSize as number,
          queueDepth: o.queueDepth as number,
          engine: o.engine as 'auto' | 'io_uring' | 'threads',
          direct: o.direct as 'auto' | 'on' | 'off',
          sparse: o.sparse !== false,
          force: o.force === true,
          signal,
          onProgress: bar ? (p) => bar.update(p.bytesDone, p.bytesTotal, `${formatRate(p.bytesPerSecond)} read p50 ${p.latencyP50Ms.toFixed(3)} ms`) : undefined,
        }).finally(() => bar?.stop()),
      );
      if (json) printJson(summary);
      else printImageSummary(summary);
    });

  program
    .command('inspect')
    .description('show what lowtide sees of a source: size, sector sizes, I/O mode')
    .argument('<source>', 'file or block device (opened read-only)')
    .addOption(new Option('--direct <mode>', 'O_DIRECT use').choices(['auto', 'on', 'off']).default('auto'))
    .option('--json', 'print JSON', false)
    .action(async (path: string, o: Record<string, unknown>) => {
      const source = await openSource(path, { direct: o.direct as 'auto' | 'on' | 'off' });
      try {
        const info = {
          ...source.info(),
          ioMode: source.direct ? 'O_DIRECT' : 'buffered',
          engine: ioUringAvailable() ? 'io_uring' : 'threads',
        };
        if (o.json === true) {
          printJson(info);
        } else {
          process.stdout.write(
            [
              `${info.path}`,
              `  kind                 ${info.kind === 'block' ? 'block device' : 'regular file'}`,
              `  size                 ${formatBytes(info.size)} (${info.size} bytes)`,
              `  logical sector       ${info.sectorSize} bytes`,
              `  physical sector      ${info.physicalSectorSize} bytes`,
              `  I/O mode             ${info.ioMode}`,
              `  read engine          ${info.engine}`,
            ].join('\n') + '\n',
          );
        }
      } finally {
        await source.close();
      }
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      if (err.exitCode === 0) return 0;
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`lowtide: ${err.message}\n`);
      return 2;
    }
    if (err instanceof LowtideError) {
      process.stderr.write(`lowtide: error [${err.code}]: ${err.message}\n`);
      if (err.code === 'ABORTED') return 130;
      return err.code === 'INVALID_ARGUMENT' ? 2 : 1;
    }
    const e = err as Error;
    process.stderr.write(`lowtide: internal error: ${e?.stack ?? String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
