/** `lowtide image`: a file or block device copied to a sparse image file. */
import { Option, type Command } from 'commander';
import {
  imageSource,
  type DirectMode,
  type DiskFormat,
  type EngineName,
  type ImageProgress,
  type ImageSummary,
} from '../../index.js';
import { collect, intArg, sizeArg, sourceFormatOption } from '../args.js';
import { withInterrupt } from '../interrupt.js';
import { printJson, printWarnings } from '../output.js';
import {
  addProgressOptions,
  formatBytes,
  formatFigures,
  formatRate,
  jobFigures,
  ProgressOutput,
  type Figures,
} from '../progress.js';
import { addThrottleOptions, throttleInfo, throttleSettings } from '../throttle-flags.js';

function printImageSummary(s: ImageSummary, f: Figures): void {
  printWarnings(s.plan.warnings);
  const lines = [
    `imaged ${s.source} -> ${s.output}`,
    `  size        ${formatBytes(s.size)}`,
    `  read        ${formatBytes(s.bytesRead)}  (${s.direct ? 'O_DIRECT' : 'buffered'}, ${s.engine}, ${formatBytes(s.blockSize)} x QD ${s.queueDepth})`,
    `  written     ${formatBytes(s.bytesWritten)}`,
    `  not read    ${formatBytes(s.bytesNotRead)} (free or excluded clusters)`,
    `  holes       ${formatBytes(s.bytesSkipped)} (all-zero blocks not written)`,
    ...s.plan.partitions.map(
      (p) =>
        `  partition ${p.index}  ${(p.fileSystem ?? 'extended').padEnd(7)} ${p.mode.padEnd(9)} read ${formatBytes(p.bytesToRead)} of ${formatBytes(p.size)}` +
        (p.fat ? `, ${p.fat.usedClusters}/${p.fat.totalClusters} clusters used` : ''),
    ),
    ...(s.plan.excluded.length > 0
      ? [
          `  excluded    ${s.plan.excluded.length} entries, ${formatBytes(s.plan.bytesExcluded)}: ${s.plan.excluded
            .slice(0, 10)
            .map((e) => `${e.partition}:${e.path}`)
            .join(', ')}${s.plan.excluded.length > 10 ? ', ...' : ''}`,
        ]
      : []),
    `  time        ${formatFigures(f)}`,
    `  latency     p50 ${s.latency.p50Ms.toFixed(3)} ms, p99 ${s.latency.p99Ms.toFixed(3)} ms, max ${s.latency.maxMs.toFixed(3)} ms`,
    ...(s.readFrom !== undefined
      ? [
          `  device      ${s.readFrom.device ?? '-'} (${s.readFrom.fileSystem}): ${formatBytes(s.readFrom.bytesFromDevice)} from the device, ${formatBytes(s.readFrom.bytesFromFile)} through the file` +
            (s.readFrom.reason !== undefined ? ` (${s.readFrom.reason})` : ''),
          ...s.readFrom.fallbacks.map(
            (f) => `    through the file: ${formatBytes(f.bytes)} in ${f.runs} runs: ${f.reason}`,
          ),
        ]
      : []),
    `  throttle    ${s.throttle.controller}, target ${s.throttle.target.ms.toFixed(2)} ms (${s.throttle.target.mode}), held back ${(s.throttle.heldBackMs / 1000).toFixed(2)} s`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function addImageCommand(program: Command): void {
  const image = program
    .command('image')
    .description('copy a file or block device to a sparse image file')
    .argument('<source>', 'file or block device to read (opened read-only)')
    .argument('<output>', 'image file to write')
    .addOption(
      new Option('--block-size <size>', 'read request size').default(1 << 20, '1M').argParser(sizeArg('--block-size')),
    )
    .addOption(
      new Option('--queue-depth <n>', 'reads in flight').default(32).argParser(intArg('--queue-depth', 1, 1024)),
    )
    .addOption(new Option('--engine <name>', 'read engine').choices(['auto', 'io_uring', 'threads']).default('auto'))
    .addOption(new Option('--direct <mode>', 'O_DIRECT use').choices(['auto', 'on', 'off']).default('auto'))
    .option(
      '--read-from-device',
      "read a file source's blocks from the block device under its file system (O_DIRECT)",
      false,
    )
    .addOption(sourceFormatOption())
    .option('--no-sparse', 'write all-zero blocks instead of leaving holes')
    .option('--all-blocks', 'copy every block (default: only what FAT file systems use)', false)
    .option(
      '--exclude <glob>',
      'leave out files/directories of FAT volumes (repeatable; "N:glob" for partition N)',
      collect,
      [],
    )
    .option('--strict', 'fail on an unparseable file system instead of copying it in full', false)
    .option('-f, --force', 'replace an existing output file', false)
    .option('--json', 'print a machine-readable summary', false);
  addProgressOptions(image);
  addThrottleOptions(image).action(async (source: string, output: string, o: Record<string, unknown>) => {
    const progress = new ProgressOutput(o, 'image', (p: ImageProgress) => ({
      ...p,
      info: `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)}`,
      extra: { bytesWritten: p.bytesWritten, bytesSkipped: p.bytesSkipped, latencyP50Ms: p.latencyP50Ms },
    }));
    const summary = await withInterrupt((signal) =>
      progress.around(
        imageSource({
          source,
          output,
          blockSize: o.blockSize as number,
          queueDepth: o.queueDepth as number,
          engine: o.engine as EngineName,
          direct: o.direct as DirectMode,
          readFrom: o.readFromDevice === true ? 'device' : 'file',
          format: o.format as DiskFormat,
          sparse: o.sparse !== false,
          force: o.force === true,
          allBlocks: o.allBlocks === true,
          exclude: o.exclude as string[],
          strict: o.strict === true,
          ...throttleSettings(o),
          signal,
          onProgress: progress.onProgress,
        }),
      ),
    );
    const figures = jobFigures(summary.size, summary.seconds, summary.bytesRead, summary.bytesWritten);
    if (o.json === true) printJson({ ...summary, figures });
    else printImageSummary(summary, figures);
  });
}
