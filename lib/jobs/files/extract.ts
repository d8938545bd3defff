/**
 * Extraction of files and directory trees out of a FAT volume, shared by
 * extraction from a disk and from a backup: where the result goes, and how
 * each file is written (complete or not at all).
 */
import { lstat, mkdir, utimes, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../../errors.js';
import { booleanOption, integerOption, objectOption, signalOption, stringOption } from '../../options.js';
import { PartialFile } from '../output.js';

export interface VolumeChoice {
  /** Partition number; optional when the disk has one FAT volume. */
  partition?: number | undefined;
}

/** What to extract and where to. */
export interface ExtractOptions extends VolumeChoice {
  /** The file or directory in the volume ('/' for all of it). */
  path: string;
  /** An existing directory to extract into, or the new name of what is extracted. */
  dest: string;
  /** Replace existing files (default false). */
  force?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

export interface ExtractResult {
  dest: string;
  files: number;
  directories: number;
  bytes: number;
}

/** An extraction's options, checked. */
export interface ResolvedExtractOptions {
  path: string;
  dest: string;
  force: boolean;
  signal: AbortSignal | undefined;
  partition: number | undefined;
}

/** The partition of VolumeChoice options (undefined: the only FAT volume). */
export function partitionOption(opts: Record<string, unknown>): number | undefined {
  return opts.partition === undefined ? undefined : integerOption('partition', opts.partition, 0, 0);
}

export function resolveExtractOptions(options: unknown): ResolvedExtractOptions {
  const opts = objectOption('options', options);
  const path = stringOption('path', opts.path);
  const dest = stringOption('dest', opts.dest);
  const force = booleanOption('force', opts.force, false);
  const signal = signalOption('signal', opts.signal);
  return { path, dest, force, signal, partition: partitionOption(opts) };
}

/** A path in a volume as '/'-separated names from the root ('/' for the root). */
export function volumePath(path: string): string {
  return (
    '/' +
    path
      .split('/')
      .filter((x) => x !== '')
      .join('/')
  );
}

/** Why `name` cannot be a file name in the destination, or undefined when it can. */
export function unsafeNameReason(name: string): string | undefined {
  if (name === '') return 'it is empty';
  if (name === '.' || name === '..') return `it is "${name}"`;
  if (name.includes('/')) return "it holds '/'";
  if (name.includes('\0')) return 'it holds a NUL byte';
  // eslint-disable-next-line no-control-regex
  if (/[\x01-\x1f\x7f]/.test(name)) return 'it holds a control character';
  return undefined;
}

/** `name` when it can be a file name in the destination; else FAT_CORRUPT saying why. */
export function safeName(name: string, where: string): string {
  const why = unsafeNameReason(name);
  if (why !== undefined)
    throw new LowtideError('FAT_CORRUPT', `unsafe name ${JSON.stringify(name)} in ${where}: ${why}`);
  return name;
}

/**
 * Makes sure `dir` is a directory of its own, never following a symbolic link:
 * creates it (and, when missing, its parents up to a directory in `made`) or
 * finds a real directory there. OUTPUT_EXISTS for anything else.
 */
async function ensureDirectory(dir: string, made: Set<string>): Promise<void> {
  if (made.has(dir)) return;
  try {
    await mkdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && dirname(dir) !== dir) {
      await ensureDirectory(dirname(dir), made);
      await ensureDirectory(dir, made);
      return;
    }
    if (code !== 'EEXIST') throw toLowtideError(err, 'WRITE_FAILED', `creating ${dir}`);
    const st = await lstat(dir);
    if (st.isSymbolicLink()) {
      throw new LowtideError('OUTPUT_EXISTS', `${dir} is a symbolic link; extraction never follows one`, {
        path: dir,
      });
    }
    if (!st.isDirectory())
      throw new LowtideError('OUTPUT_EXISTS', `${dir} exists and is not a directory`, { path: dir });
  }
  made.add(dir);
}

/** Where an extraction goes: `dest`, or inside it under `name()` when `dest` is an existing directory. */
export async function extractTarget(dest: string, name: () => string): Promise<string> {
  const target = resolve(dest);
  const existing = await lstat(target).catch(() => undefined);
  return existing?.isDirectory() ? join(target, name()) : target;
}

/**
 * Writes one extracted file: into a temporary file beside `to`, synced, then
 * renamed, so `to` appears complete or not at all. `fill` writes the bytes and
 * returns how many; the mtime is set afterwards.
 */
export async function writeExtracted(
  to: string,
  options: { force: boolean; signal: AbortSignal | undefined; size: number; modified: Date; what: string },
  fill: (fh: FileHandle) => Promise<number>,
): Promise<void> {
  const { force, signal } = options;
  if (signal?.aborted) throw new LowtideError('ABORTED', 'extract was aborted', { cause: signal.reason });
  const there = await lstat(to).catch(() => undefined);
  if (there && !force)
    throw new LowtideError('OUTPUT_EXISTS', `${to} exists; pass force (--force) to replace it`, { path: to });
  if (there?.isDirectory()) throw new LowtideError('OUTPUT_EXISTS', `${to} is a directory`, { path: to });
  const file = await PartialFile.create(to, 4);
  let done = false;
  try {
    const written = await fill(file.handle);
    if (written !== options.size) {
      throw new LowtideError(
        'FAT_CORRUPT',
        `${options.what}: ${written} bytes of data for a ${options.size}-byte file`,
      );
    }
    await file.commit({ syncDirectory: false });
    done = true;
    await utimes(to, options.modified, options.modified).catch(() => undefined);
  } catch (err) {
    throw toLowtideError(err, 'WRITE_FAILED', `extracting ${options.what}`);
  } finally {
    if (!done) await file.discard();
  }
}

/** A file or directory of a volume, by its path from the root. */
interface TreeEntry {
  path: string;
  isDirectory: boolean;
}

/**
 * Extracts `top` to `target`: a file as one file; a directory (or the root,
 * when `top` is undefined) as a directory holding `below()`, the entries
 * under it in depth-first order. `writeFile` writes one file and counts it.
 */
export async function extractTree<E extends TreeEntry>(
  top: E | undefined,
  target: string,
  below: () => Promise<E[]>,
  writeFile: (e: E, to: string) => Promise<void>,
  result: ExtractResult,
): Promise<void> {
  if (top && !top.isDirectory) {
    await writeFile(top, target);
    return;
  }
  const prefix = top ? top.path : '';
  // Every directory is made here or found real (lstat), never through a symbolic link;
  // files are created with O_EXCL beside their target and renamed over it.
  const made = new Set<string>();
  await ensureDirectory(target, made);
  result.directories++;
  for (const e of await below()) {
    const rel = e.path
      .slice(prefix.length + 1)
      .split('/')
      .map((n) => safeName(n, e.path));
    const to = join(target, ...rel);
    if (e.isDirectory) {
      await ensureDirectory(to, made);
      result.directories++;
    } else {
      await ensureDirectory(dirname(to), made);
      await writeFile(e, to);
    }
  }
}
