/** `lowtide inspect`: what lowtide sees of a source: size, sector sizes, I/O mode, partitions and file systems. */
import { Option, type Command } from 'commander';
import {
  describeDisk,
  ioUringAvailable,
  openSource,
  type DiskFormat,
  type DiskInfo,
  type SourceInfo,
} from '../../index.js';
import { sourceFormatOption } from '../args.js';
import { printJson } from '../output.js';
import { formatBytes } from '../progress.js';

/** What `inspect` prints without --json. */
function printSourceInfo(info: SourceInfo & DiskInfo & { ioMode: string; engine: string }): void {
  process.stdout.write(
    [
      `${info.path}`,
      `  kind                 ${info.kind === 'block' ? 'block device' : 'regular file'}`,
      `  size                 ${formatBytes(info.size)} (${info.size} bytes)`,
      ...(info.virtualDisk
        ? [
            `  format               qcow2${info.virtualDisk.probed ? ' (detected)' : ''}, ${formatBytes(info.virtualDisk.clusterSize)} clusters, ${formatBytes(info.virtualDisk.allocatedBytes)} allocated`,
            ...info.virtualDisk.layers.slice(1).map((l) => `  backing file         ${l.path} (${l.format})`),
          ]
        : []),
      `  logical sector       ${info.sectorSize} bytes`,
      `  physical sector      ${info.physicalSectorSize} bytes`,
      `  I/O mode             ${info.ioMode}`,
      `  read engine          ${info.engine}`,
      `  partition table      ${info.table}`,
      ...info.partitions.map(
        (p) =>
          `  partition ${String(p.index).padEnd(3)}        ${formatBytes(p.start).padStart(10)} +${formatBytes(p.size).padEnd(10)} ${(p.fileSystem ?? 'extended').padEnd(8)}` +
          (p.fat
            ? ` ${p.fat.type}, ${formatBytes(p.fat.clusterSize)} clusters, ${p.fat.usedClusters}/${p.fat.totalClusters} used, ${p.fat.freeClusters} free${p.fat.label ? `, label ${JSON.stringify(p.fat.label)}` : ''}`
            : '') +
          (p.error ? ` (${p.error})` : ''),
      ),
      ...info.warnings.map((w) => `  warning              ${w}`),
    ].join('\n') + '\n',
  );
}

export function addInspectCommand(program: Command): void {
  program
    .command('inspect')
    .description('show what lowtide sees of a source: size, sector sizes, I/O mode')
    .argument('<source>', 'file or block device (opened read-only)')
    .addOption(new Option('--direct <mode>', 'O_DIRECT use').choices(['auto', 'on', 'off']).default('auto'))
    .addOption(sourceFormatOption())
    .option('--json', 'print JSON', false)
    .action(async (path: string, o: Record<string, unknown>) => {
      const format = o.format as DiskFormat;
      const source = await openSource(path, { direct: o.direct as 'auto' | 'on' | 'off', format });
      try {
        const disk = await describeDisk(path, { format });
        const info = {
          ...source.info(),
          ioMode: source.direct ? 'O_DIRECT' : 'buffered',
          engine: ioUringAvailable() ? 'io_uring' : 'threads',
          ...disk,
        };
        if (o.json === true) printJson(info);
        else printSourceInfo(info);
      } finally {
        await source.close();
      }
    });
}
