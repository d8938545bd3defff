/**
 * Which backup a command means: an id, or `latest`, the newest backup of
 * --source. Without --source, `latest` in a repository holding backups of
 * several sources is ambiguous: an error listing them, never another disk's
 * backup. The choice is said on stderr and returned for --json.
 */
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { openRepository, type Manifest, type Repository } from '../index.js';
import { CliError, EXIT } from './output.js';

/** The backup a command chose, as --json reports it. */
export interface SelectedBackup {
  id: string;
  created: string;
  source: Manifest['source'];
  /** `latest`: chosen as the newest (of --source when given); `id`: named. */
  by: 'latest' | 'id';
}

export function addSourceOption(cmd: Command): Command {
  return cmd.addOption(
    new Option('--source <path>', 'with --repo and "latest": the newest backup of this source (disk or image path)'),
  );
}

/** The paths a source may have been backed up as: as given, absolute, and with symlinks resolved. */
async function sourcePaths(path: string): Promise<Set<string>> {
  const paths = new Set([path, resolve(path)]);
  try {
    paths.add(await realpath(path));
  } catch {
    // A source that is gone (a detached disk) still names its old backups by path.
  }
  return paths;
}

function isOf(m: Manifest, paths: Set<string>): boolean {
  return paths.has(m.source.path) || paths.has(m.source.realPath) || paths.has(resolve(m.source.path));
}

/** Resolves a backup id or `latest` (of `source`) to one backup, saying on stderr which `latest` is. */
export async function selectBackup(repoPath: string, id: string, source: string | undefined): Promise<SelectedBackup> {
  const repo = await openRepository(repoPath);
  try {
    return await selectIn(repo, id, source);
  } finally {
    repo.close();
  }
}

async function selectIn(repo: Repository, id: string, source: string | undefined): Promise<SelectedBackup> {
  const pick = (m: Manifest, by: SelectedBackup['by']): SelectedBackup => ({
    id: m.id,
    created: m.created,
    source: m.source,
    by,
  });
  const paths = source === undefined ? undefined : await sourcePaths(source);
  if (id !== 'latest') {
    const m = await repo.readManifest(id);
    if (paths && !isOf(m, paths)) {
      throw new CliError('SOURCE_MISMATCH', `backup ${m.id} is of ${m.source.path}, not of ${source}`, EXIT.usage);
    }
    return pick(m, 'id');
  }
  const { backups } = await repo.listBackups();
  let candidates = backups;
  if (paths) {
    candidates = backups.filter((m) => isOf(m, paths));
  } else {
    const sources = [...new Set(backups.map((m) => m.source.realPath))];
    if (sources.length > 1) {
      throw new CliError(
        'AMBIGUOUS_BACKUP',
        `"latest": ${repo.path} holds backups of ${sources.length} sources (${sources.join(', ')}); name one with --source`,
        EXIT.usage,
      );
    }
  }
  const last = candidates[candidates.length - 1];
  if (!last) {
    throw new CliError(
      'BACKUP_NOT_FOUND',
      paths ? `no backup of ${source} in ${repo.path}` : `the repository ${repo.path} has no backups yet`,
    );
  }
  process.stderr.write(`lowtide: latest is ${last.id} (${last.source.path}, ${last.created})\n`);
  return pick(last, 'latest');
}
