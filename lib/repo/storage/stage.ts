/**
 * A local staging directory for a remote repository: the chunk index and the
 * catalog of a backup are written here (sequentially, by the same code as for
 * a local repository) and uploaded at the commit; an index or catalog read
 * from the storage is downloaded here and unlinked as soon as it is open.
 *
 * The directory is `lowtide-stage.<pid>.<random>` in the system's temporary
 * directory, removed when the repository is closed or the process exits;
 * directories of processes that no longer run (killed) are removed when the
 * next one is created.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Stage {
  readonly dir: string;
  readonly tmpDir: string;
  readonly backupsDir: string;
  remove(): void;
}

const STAGE_NAME = /^lowtide-stage\.(\d+)\.[0-9a-f]{12}$/;
const live = new Set<Stage>();
let exitHook = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the staging directories of processes that have ended. */
function removeStale(root: string): void {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return;
  }
  for (const n of names) {
    const m = STAGE_NAME.exec(n);
    if (m && Number(m[1]) !== process.pid && !alive(Number(m[1]))) {
      rmSync(join(root, n), { recursive: true, force: true });
    }
  }
}

export function createStage(): Stage {
  const root = tmpdir();
  removeStale(root);
  const dir = join(root, `lowtide-stage.${process.pid}.${randomBytes(6).toString('hex')}`);
  mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, 'backups'), { mode: 0o700 });
  const stage: Stage = {
    dir,
    tmpDir: join(dir, 'tmp'),
    backupsDir: join(dir, 'backups'),
    remove(): void {
      live.delete(stage);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  live.add(stage);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const s of [...live]) s.remove();
    });
  }
  return stage;
}
