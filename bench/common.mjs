// Parts several benchmarks share beyond fat-volume.mjs's helpers: the
// rotating order of a round, writing a result file, an XFS file system on a
// loop device, and the restic and borg peers of a full backup.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { root, timed } from './fat-volume.mjs';

/** `list` rotated by `round`: every contestant runs first in turn, so drift in the machine hits all alike. */
export function rotate(list, round) {
  return list.map((_, i) => list[(i + round) % list.length]);
}

/** Writes `summary` (with its `date`) to bench/results/<name>-<date>.json; returns the path. */
export function writeResults(name, summary) {
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  const file = join(root, 'bench', 'results', `${name}-${summary.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(summary, null, 2) + '\n');
  return file;
}

/**
 * An XFS file system (reflink=1) on a loop device over a sparse file in `dir`,
 * with direct I/O to its backing file (reads are not served by the backing
 * file's page cache), mounted beside it. Needs root. remove() undoes it by
 * exact name; it also runs on exit, SIGINT and SIGTERM.
 */
export function xfsLoopDevice(dir, sizeMiB, tag) {
  const backing = join(dir, `${tag}-${process.pid}.img`);
  const mnt = join(dir, `${tag}-${process.pid}.mnt`);
  const fs = { backing, mnt, loop: undefined, mounted: false };
  fs.remove = () => {
    if (fs.mounted) spawnSync('umount', [mnt], { stdio: 'ignore' });
    fs.mounted = false;
    if (fs.loop) spawnSync('losetup', ['--detach', fs.loop], { stdio: 'ignore' });
    fs.loop = undefined;
    rmSync(mnt, { recursive: true, force: true });
    rmSync(backing, { force: true });
  };
  process.on('exit', fs.remove);
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      fs.remove();
      process.exit(130);
    });
  }
  try {
    mkdirSync(dir, { recursive: true });
    execFileSync('truncate', ['-s', `${sizeMiB}M`, backing]);
    fs.loop = execFileSync('losetup', ['--find', '--show', '--direct-io=on', backing], { encoding: 'utf8' }).trim();
    execFileSync('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', fs.loop]);
    mkdirSync(mnt, { recursive: true });
    execFileSync('mount', [fs.loop, mnt]);
    fs.mounted = true;
  } catch (err) {
    fs.remove();
    throw err;
  }
  return fs;
}

/**
 * restic as a backup peer, its state (cache) under `stateDir`. backup() reads
 * the image as one stream (`backup --stdin`), as for a disk image.
 */
export function resticPeer(stateDir, { before = () => {}, imageName = 'disk.img' } = {}) {
  const env = {
    RESTIC_PASSWORD: 'bench',
    RESTIC_CACHE_DIR: join(stateDir, 'restic-cache'),
    RESTIC_PROGRESS_FPS: '0.1',
  };
  return {
    env,
    async init(repo) {
      await timed('restic', ['-r', repo, 'init', '--repository-version', '2'], { env });
    },
    async backup(repo, image) {
      before();
      const r = await timed('restic', ['-r', repo, 'backup', '--stdin', '--stdin-filename', imageName, '--json'], {
        env,
        stdinFile: image,
      });
      const summary =
        r.stdout
          .split('\n')
          .filter((l) => l.includes('"summary"'))
          .map((l) => JSON.parse(l))[0] ?? {};
      return {
        seconds: r.seconds,
        diskReadBytes: r.io.read_bytes,
        diskWriteBytes: r.io.write_bytes,
        bytesStored: summary.data_added ?? null,
        bytesProcessed: summary.total_bytes_processed ?? null,
      };
    },
  };
}

/** borg as a backup peer (no encryption, zstd level 3), its state under `stateDir`. */
export function borgPeer(stateDir, { before = () => {} } = {}) {
  const env = {
    BORG_PASSPHRASE: '',
    BORG_BASE_DIR: join(stateDir, 'borg-base'),
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
    BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
  };
  return {
    env,
    async init(repo) {
      await timed('borg', ['init', '-e', 'none', repo], { env });
    },
    /** Backs up `imageName` in `imageDir` (a file or, with --read-special, a device) as `archive`. */
    async create(repo, archive, imageDir, imageName) {
      before();
      const r = await timed(
        'borg',
        ['create', '--read-special', '--compression', 'zstd,3', '--json', `${repo}::${archive}`, imageName],
        { env, cwd: imageDir },
      );
      let stats = {};
      try {
        stats = JSON.parse(r.stdout).archive.stats;
      } catch {
        /* keep going without */
      }
      return {
        seconds: r.seconds,
        diskReadBytes: r.io.read_bytes,
        diskWriteBytes: r.io.write_bytes,
        bytesStored: stats.deduplicated_size ?? null,
      };
    },
  };
}
