/** `lowtide bitmaps`: the persistent dirty bitmaps of a qcow2 image and the guest ranges each marks. */
import { Option, type Command } from 'commander';
import { LowtideError, openSource, type DiskFormat, type Extent } from '../../index.js';
import { printJson } from '../output.js';
import { formatBytes } from '../progress.js';

export function addBitmapsCommand(program: Command): void {
  program
    .command('bitmaps')
    .description('list the persistent dirty bitmaps of a qcow2 image and the guest ranges each marks as changed')
    .argument('<source>', 'qcow2 image (opened read-only)')
    .addOption(
      new Option('--format <format>', 'qcow2 (the image is named as qcow2) or auto (the probing rule applies)')
        .choices(['qcow2', 'auto'])
        .default('qcow2'),
    )
    .option('--json', 'print JSON', false)
    .action(async (path: string, o: Record<string, unknown>) => {
      const source = await openSource(path, { format: o.format as DiskFormat, direct: 'off' });
      try {
        const disk = source.virtualDisk;
        if (disk === undefined) throw new LowtideError('UNSUPPORTED', `${path} is not a qcow2 image`);
        const bitmaps = [];
        for (const b of disk.bitmaps) {
          // An in-use bitmap is listed, never read as if valid.
          let extents: Extent[] | null = null;
          if (!b.inUse) extents = await source.bitmapExtents(b.name);
          const changedBytes = extents === null ? null : extents.reduce((n, e) => n + e.length, 0);
          bitmaps.push({ ...b, changedBytes, extents: extents?.map((e) => [e.offset, e.length]) ?? null });
        }
        if (o.json === true) {
          printJson({ source: path, virtualSize: source.size, bitmaps });
          return;
        }
        if (bitmaps.length === 0) process.stdout.write(`${path}: no persistent dirty bitmaps\n`);
        for (const b of bitmaps) {
          process.stdout.write(
            `${b.name}: ${formatBytes(b.granularity)} granularity, ${b.enabled ? 'enabled' : 'disabled'}, ` +
              (b.inUse
                ? 'IN USE (not valid: the image was not closed cleanly or is open in QEMU)\n'
                : `${formatBytes(b.changedBytes ?? 0)} changed in ${b.extents?.length ?? 0} extents\n`),
          );
        }
      } finally {
        await source.close();
      }
    });
}
