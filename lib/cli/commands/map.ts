/** `lowtide map`: a file's offset table: where its bytes are on the block device under its file system. */
import type { Command } from 'commander';
import { mapFile, type OffsetTable } from '../../index.js';
import { printJson } from '../output.js';
import { formatBytes } from '../progress.js';

function printTable(t: OffsetTable): void {
  const lines = [
    `${t.path} (${formatBytes(t.size)}) on ${t.fileSystem}, device ${t.device ?? '-'}`,
    t.deviceMappable ? '  device-mappable' : `  not device-mappable: ${t.reason ?? ''}`,
    `  on device ${formatBytes(t.bytesOnDevice)}, zeros ${formatBytes(t.bytesZero)}, through the file ${formatBytes(t.bytesThroughFile)}`,
    ...t.runs.map((r) => {
      const where =
        r.kind === 'device'
          ? `device ${r.deviceOffset}${r.flags.length > 0 ? ` (${r.flags.join(', ')})` : ''}`
          : r.kind === 'zero'
            ? `zeros (${r.reason})`
            : `file (${r.reason})`;
      return `  ${String(r.offset).padStart(14)} +${String(r.length).padEnd(12)} ${where}`;
    }),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function addMapCommand(program: Command): void {
  program
    .command('map')
    .description("show a file's offset table: where its bytes are on the block device under its file system")
    .argument('<source>', 'regular file (opened read-only; its delayed allocations are written out first)')
    .option('--json', 'print JSON', false)
    .action(async (path: string, o: Record<string, unknown>) => {
      const table = await mapFile(path);
      if (o.json === true) printJson(table);
      else printTable(table);
    });
}
