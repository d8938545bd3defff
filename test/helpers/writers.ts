/**
 * The many-writers cases that local and S3 repositories (both formats)
 * share: concurrent backups of different disks and of the same disk, and
 * prune while a backup runs. Each suite supplies how it runs the CLI and
 * looks into its repository, and keeps its own assertions on what the
 * returned ids and reports show.
 */
import { writeFileSync } from 'node:fs';
import { expect } from 'vitest';
import type { CliResult } from './cli.js';
import { patternBytes, type TempDir } from './tmp.js';

const MiB = 1024 * 1024;

export interface Writers {
  work: TempDir;
  /** `lowtide ARGS` (with whatever the repository needs, e.g. --s3-endpoint), to its end. */
  run(args: string[]): CliResult;
  /** `lowtide ARGS` in the background. */
  start(args: string[]): { done: Promise<CliResult> };
  /** Waits until `n` backup leases exist at once in `repo`. */
  waitForLeases(repo: string, n: number): Promise<void>;
  /** The ids of the backups whose manifests are in `repo`, sorted. */
  manifests(repo: string): Promise<string[]>;
  /** The backup leases in `repo`. */
  leases(repo: string): Promise<string[]>;
  restoresExactly(repo: string, id: string, source: string): void;
  verifyOk(repo: string): void;
}

/** A raw image in `work`: `shared` MiB the same in every image, then `mib - shared` MiB of its own. */
export function sharedImage(work: TempDir, name: string, seed: number, mib = 8, shared = 2): string {
  const path = work.file(name);
  writeFileSync(path, Buffer.concat([patternBytes(shared * MiB, 1000), patternBytes((mib - shared) * MiB, seed)]));
  return path;
}

/**
 * Two backups of different disks at once, then the same disk twice at once
 * (`pair` runs two backups so that they overlap and returns their ids); all
 * four manifests are there, no lease stays, verify passes and every backup
 * restores exactly. Returns the ids: a, b, a, a.
 */
export async function twoPairsAtOnce(
  w: Writers,
  repo: string,
  pair: (x: string, y: string) => Promise<[string, string]> = (x, y) => bothAtOnce(w, repo, x, y),
): Promise<string[]> {
  const a = sharedImage(w.work, 'a.img', 1);
  const b = sharedImage(w.work, 'b.img', 2);
  const [ia, ib] = await pair(a, b);
  const [ia2, ia3] = await pair(a, a);
  const ids = [ia, ib, ia2, ia3];
  expect(await w.manifests(repo)).toEqual([...ids].sort());
  expect(await w.leases(repo)).toEqual([]);
  w.verifyOk(repo);
  [a, b, a, a].forEach((src, i) => w.restoresExactly(repo, ids[i]!, src));
  return ids;
}

/** Two backups started together (`--no-parent`); both must succeed. */
async function bothAtOnce(w: Writers, repo: string, x: string, y: string): Promise<[string, string]> {
  const runs = [x, y].map((src) => w.start(['backup', src, '--repo', repo, '--no-parent']).done);
  const [r1, r2] = await Promise.all(runs);
  expect(r1!.status, r1!.stderr).toBe(0);
  expect(r2!.status, r2!.stderr).toBe(0);
  return [r1!.stdout.trim(), r2!.stdout.trim()];
}

export interface PruneReportJson {
  removed: string[];
  chunksRemoved: number;
  packsRemoved?: number;
  chunksKept?: string;
  bytesFreed: number;
}

/**
 * Two backups of disk d (4 MiB, changed whole in between), then a slow
 * backup of disk c whose data is partly the first backup's; while it runs,
 * `prune --keep-last 1` removes the first backup and must keep everything
 * the running backup needs. Checked here: both prunes succeed, the first
 * removes exactly the first backup, the slow backup succeeds and restores
 * exactly (after each prune), verify passes. The reports are returned for
 * the suite's own checks; `beforeSlow` runs before the slow backup starts.
 */
export async function pruneWhileBackupRuns(
  w: Writers,
  repo: string,
  beforeSlow?: () => Promise<void>,
): Promise<{
  first: string;
  second: string;
  slow: string;
  c: string;
  d: string;
  during: PruneReportJson;
  after: PruneReportJson;
}> {
  const d = sharedImage(w.work, 'd.img', 3, 4);
  const first = w.run(['backup', d, '--repo', repo]).stdout.trim();
  writeFileSync(d, patternBytes(4 * MiB, 4));
  const second = w.run(['backup', d, '--repo', repo]).stdout.trim();
  expect(second).not.toBe(first);
  await beforeSlow?.();
  // A slow backup of another disk whose data is the first backup's.
  const c = w.work.file('c.img');
  writeFileSync(c, Buffer.concat([patternBytes(2 * MiB, 1000), patternBytes(2 * MiB, 3), patternBytes(4 * MiB, 5)]));
  const slowRun = w.start(['backup', c, '--repo', repo, '--rate-limit', '2']);
  await w.waitForLeases(repo, 1);
  const prune = (): PruneReportJson => {
    const r = w.run(['prune', '--repo', repo, '--keep-last', '1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as PruneReportJson;
  };
  const during = prune();
  expect(during.removed).toEqual([first]);
  const done = await slowRun.done;
  expect(done.status, done.stderr).toBe(0);
  const slow = done.stdout.trim();
  w.restoresExactly(repo, slow, c);
  w.verifyOk(repo);
  const after = prune();
  w.restoresExactly(repo, slow, c);
  return { first, second, slow, c, d, during, after };
}
