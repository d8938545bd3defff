/** `lowtide init`: a new backup repository. */
import { Option, type Command } from 'commander';
import { initRepository } from '../../index.js';
import { intArg, sizeArg } from '../args.js';
import { CliError, EXIT, printJson } from '../output.js';
import { formatBytes } from '../progress.js';

export function addInitCommand(program: Command): void {
  program
    .command('init')
    .description('create a backup repository in an empty or new directory, or in an empty prefix of an S3 bucket')
    .argument('[repo]', 'directory or s3://bucket/prefix for the repository (or --repo)')
    .option('--repo <repo>', 'directory or s3://bucket/prefix for the repository')
    .addOption(
      new Option('--chunk-size <size>', 'chunk size: a power of two from 64K to 8M')
        .default(1 << 20, '1M')
        .argParser(sizeArg('--chunk-size')),
    )
    .addOption(
      new Option('--zstd-level <n>', 'zstd compression level').default(3).argParser(intArg('--zstd-level', 1, 19)),
    )
    .addOption(
      new Option('--encryption <algorithm>', 'encrypt the repository (passphrase: LOWTIDE_PASSWORD or --password-file)')
        .choices(['none', 'aes-256-gcm'])
        .default('none'),
    )
    .addOption(
      new Option(
        '--pack-size <size>',
        'S3: bytes of chunks per pack object (1M to 256M; 0: one object per chunk, format version 1)',
      )
        .default(undefined, '16M')
        .argParser(sizeArg('--pack-size')),
    )
    .option('--json', 'print JSON', false)
    .action(async (arg: string | undefined, o: Record<string, unknown>) => {
      const path = arg ?? (o.repo as string | undefined);
      if (path === undefined || (arg !== undefined && o.repo !== undefined)) {
        throw new CliError('USAGE', 'init: give the repository once, as an argument or with --repo', EXIT.usage);
      }
      const repo = await initRepository(path, {
        chunkSize: o.chunkSize as number,
        zstdLevel: o.zstdLevel as number,
        encryption: o.encryption as 'none' | 'aes-256-gcm',
        packSize: o.packSize as number | undefined,
      });
      repo.close();
      if (o.json === true) printJson({ path: repo.path, ...repo.config });
      else
        process.stdout.write(
          `created ${repo.isEncrypted ? 'encrypted ' : ''}repository ${repo.path} (chunk size ${formatBytes(repo.chunkSize)}, zstd level ${repo.config.compression.level}${repo.config.packSize !== undefined ? `, packs of ${formatBytes(repo.config.packSize)}` : ''})\n`,
        );
    });
}
