/**
 * Where a restore writes: a new image file (written under a temporary name,
 * renamed when complete; zero chunks stay holes) or a block device (written
 * in place, zeros too, with aligned O_DIRECT writes when the device takes
 * them). An image file is written through the page cache with early
 * writeback, or, when asked (`preferDirect`, a restore from object storage)
 * and its file system allows it, with aligned O_DIRECT writes too.
 */
import { constants as fsc } from 'node:fs';
import { lstat, open, readdir, realpath, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { LowtideError, toLowtideError } from '../../errors.js';
import { Qcow2Writer } from '../../io/qcow2-writer.js';
import { openSource } from '../../io/source.js';
import { native } from '../../native.js';
import type { Manifest } from '../../repo/format.js';
import { PartialFile, writeError } from '../output.js';
import { EarlyWriteback } from '../writeback.js';

export type TargetKind = 'file' | 'block';

/**
 * What `target` is: a block device (overwritten; a symbolic link to one, as in
 * /dev/disk/by-id, is resolved once and the device's own path returned), or a
 * file (new, or replaced with `force`). Anything else is an error.
 */
export async function targetKind(target: string, force: boolean): Promise<{ kind: TargetKind; path: string }> {
  let existing;
  try {
    existing = await lstat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw toLowtideError(err, 'WRITE_FAILED', `checking ${target}`);
  }
  if (existing?.isSymbolicLink()) {
    let resolved: string;
    try {
      resolved = await realpath(target);
      if ((await stat(resolved)).isBlockDevice()) return { kind: 'block', path: resolved };
    } catch (err) {
      throw toLowtideError(err, 'INVALID_ARGUMENT', `target ${target} is a symbolic link that does not resolve`);
    }
    throw new LowtideError(
      'UNSUPPORTED',
      `target ${target} is a symbolic link to ${resolved}, which is not a block device; links are followed only to block devices`,
    );
  }
  if (existing?.isBlockDevice()) return { kind: 'block', path: target };
  if (existing?.isDirectory()) throw new LowtideError('INVALID_ARGUMENT', `target ${target} is a directory`);
  if (existing && !existing.isFile())
    throw new LowtideError('UNSUPPORTED', `target ${target} is neither a file nor a block device`);
  if (existing && !force) {
    throw new LowtideError('OUTPUT_EXISTS', `target ${target} exists; pass force (--force) to replace it`, {
      path: target,
    });
  }
  return { kind: 'file', path: target };
}

/** Random bytes in the name of a restore's partial file (PartialFile.create). */
const PARTIAL_RANDOM_BYTES = 6;

/**
 * Removes the partial files a killed restore to `target` left: exactly
 * `.NAME.<12 hex>.lowtide-partial` beside it, regular files that no running
 * restore holds (each restore keeps an flock on its own). Returns their paths.
 */
export async function removeStalePartials(target: string): Promise<string[]> {
  const dir = dirname(target);
  const name = basename(target);
  const hex = PARTIAL_RANDOM_BYTES * 2;
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    if (!n.startsWith(`.${name}.`) || !n.endsWith('.lowtide-partial')) continue;
    const middle = n.slice(name.length + 2, -'.lowtide-partial'.length);
    if (middle.length !== hex || !/^[0-9a-f]+$/.test(middle)) continue;
    const path = join(dir, n);
    let fh: FileHandle | undefined;
    try {
      fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
      if (!(await fh.stat()).isFile() || !native.tryLockExclusive(fh.fd)) continue;
      await unlink(path);
      removed.push(path);
    } catch {
      // Gone meanwhile, a link, or not ours to remove: left alone.
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }
  return removed;
}

async function blockDeviceGeometry(path: string): Promise<{ size: number; sectorSize: number }> {
  const src = await openSource(path, { direct: 'off' });
  try {
    return { size: src.size, sectorSize: src.sectorSize };
  } finally {
    await src.close();
  }
}

export class RestoreTarget {
  readonly path: string;
  readonly kind: TargetKind;
  /** 'raw': the image's bytes; 'qcow2' (files only): a qcow2 image of them (Qcow2Writer). */
  readonly format: 'raw' | 'qcow2';
  #qcow2: Qcow2Writer | undefined;
  /** Zero chunks are written from this buffer; without one (a file) they are left as holes. */
  readonly zeroChunk: Buffer | undefined;
  readonly #chunkSize: number;
  /** Opened with O_DIRECT: writes are aligned, from aligned buffers. */
  #direct = false;
  #sectorSize = 512;
  #partial: PartialFile | undefined;
  #device: FileHandle | undefined;
  /** A second, buffered descriptor for a tail shorter than a sector (direct only). */
  #tail: FileHandle | undefined;
  /** An image file's second descriptor, O_DIRECT (the partial file's own is buffered). */
  #directFile: FileHandle | undefined;
  /** Through the page cache: writeback is started as the image grows (see EarlyWriteback). */
  #writeback: EarlyWriteback | undefined;
  readonly #alignedPool: Buffer[] = [];
  #finished = false;
  /** Partial files of killed restores to the same target, removed by open(). */
  removedPartials: string[] = [];

  /**
   * `preferDirect`: a raw image file is written with O_DIRECT where its file
   * system allows it. A restore from object storage is bound by the CPU
   * (receiving, decrypting and checking the chunks on a machine that may
   * also run the storage); writes that bypass the page cache save the copy
   * into it and the kernel's writeback of it (measured: a tenth of the
   * restore's CPU). From a local repository the disks bound it, and the
   * page cache's early writeback does as well or better.
   */
  constructor(
    path: string,
    kind: TargetKind,
    chunkSize: number,
    format: 'raw' | 'qcow2' = 'raw',
    private readonly preferDirect = false,
  ) {
    if (format === 'qcow2' && kind !== 'file') {
      throw new LowtideError('INVALID_ARGUMENT', `format: 'qcow2' writes an image file; ${path} is a block device`);
    }
    this.path = path;
    this.kind = kind;
    this.format = format;
    this.#chunkSize = chunkSize;
    this.zeroChunk = kind === 'block' ? native.alignedBuffer(chunkSize) : undefined;
  }

  get direct(): boolean {
    return this.#direct;
  }

  /**
   * Opens the target for the image of `manifest`: a file of its size, or a
   * device at least as large. `writebackStep` paces the writeback of a target
   * written through the page cache (EarlyWriteback).
   */
  async open(manifest: Manifest, writebackStep?: () => number): Promise<void> {
    try {
      if (this.kind === 'block') await this.#openDevice(manifest);
      else {
        this.removedPartials = await removeStalePartials(this.path);
        this.#partial = await PartialFile.create(this.path, PARTIAL_RANDOM_BYTES);
        // Held while the restore runs: another restore to the same target leaves it alone.
        native.tryLockExclusive(this.#partial.handle.fd);
        if (this.format === 'qcow2') this.#qcow2 = new Qcow2Writer(this.#partial.handle, manifest.size);
        else {
          await this.#partial.handle.truncate(manifest.size);
          if (this.preferDirect) await this.#openDirectFile(this.#partial.path);
        }
      }
    } catch (err) {
      throw writeError(err, `opening ${this.path}`);
    }
    if (!this.#direct) this.#writeback = new EarlyWriteback(this.#handle().fd, writebackStep);
  }

  /** Opens the partial file once more with O_DIRECT, unless its file system refuses it. */
  async #openDirectFile(path: string): Promise<void> {
    try {
      this.#directFile = await open(path, fsc.O_WRONLY | fsc.O_DIRECT);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EINVAL') return;
      throw err;
    }
    this.#direct = true;
    // The file system's block size is at most a page: chunks are whole pages.
    this.#sectorSize = 4096;
  }

  async #openDevice(manifest: Manifest): Promise<void> {
    const geo = await blockDeviceGeometry(this.path);
    this.#sectorSize = geo.sectorSize;
    try {
      this.#device = await open(this.path, fsc.O_WRONLY | fsc.O_DIRECT);
      this.#direct = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      this.#device = await open(this.path, fsc.O_WRONLY);
    }
    if (geo.size < manifest.size) {
      throw new LowtideError(
        'TARGET_TOO_SMALL',
        `target ${this.path} has ${geo.size} bytes; backup ${manifest.id} needs ${manifest.size}`,
      );
    }
  }

  #handle(): FileHandle {
    return this.#directFile ?? this.#partial?.handle ?? this.#device!;
  }

  /** Writes `length` bytes of `data` at `offset`, aligned when direct. */
  async write(data: Buffer, length: number, offset: number): Promise<void> {
    const out = this.#handle();
    if (this.#qcow2) {
      const before = this.#qcow2.dataBytes;
      await this.#qcow2.write(data, length, offset);
      this.#writeback?.wrote(this.#qcow2.dataBytes - before);
      return;
    }
    if (this.#writeback) {
      const { bytesWritten: n } = await out.write(data, 0, length, offset);
      if (n !== length) throw new Error(`short write at ${offset}`);
      this.#writeback.wrote(n);
      return;
    }
    const aligned = length - (length % this.#sectorSize);
    if (aligned > 0) await this.#writeAligned(out, data, aligned, offset);
    if (aligned < length) {
      // An image file's tail: through its own, buffered descriptor.
      const tail = this.#partial?.handle ?? (this.#tail ??= await open(this.path, fsc.O_WRONLY));
      const { bytesWritten: n } = await tail.write(data, aligned, length - aligned, offset + aligned);
      if (n !== length - aligned) throw new Error(`short write at ${offset + aligned}`);
    }
  }

  async #writeAligned(out: FileHandle, data: Buffer, length: number, offset: number): Promise<void> {
    let buf = data;
    let pooled = false;
    if (data !== this.zeroChunk) {
      buf = this.#alignedPool.pop() ?? native.alignedBuffer(this.#chunkSize);
      pooled = true;
      data.copy(buf, 0, 0, length);
    }
    try {
      const { bytesWritten: n } = await out.write(buf, 0, length, offset);
      if (n !== length) throw new Error(`short write at ${offset}`);
    } finally {
      if (pooled) this.#alignedPool.push(buf);
    }
  }

  /** Makes everything written durable; a file then replaces the target. */
  async finish(): Promise<void> {
    try {
      if (this.#tail) {
        await this.#tail.sync();
        await this.#tail.close();
        this.#tail = undefined;
      }
      if (this.#partial) {
        if (this.#directFile) {
          await this.#directFile.sync();
          await this.#directFile.close();
          this.#directFile = undefined;
        }
        await this.#qcow2?.finish();
        await this.#partial.commit({ syncDirectory: true });
      } else {
        await this.#device!.sync();
        await this.#device!.close();
        this.#device = undefined;
      }
      this.#finished = true;
    } catch (err) {
      throw toLowtideError(err, 'WRITE_FAILED', `finishing ${this.path}`);
    }
  }

  /** Closes what is open; an unfinished file is removed. */
  async close(): Promise<void> {
    if (this.#device) await this.#device.close().catch(() => undefined);
    if (this.#directFile) await this.#directFile.close().catch(() => undefined);
    if (this.#tail) await this.#tail.close().catch(() => undefined);
    if (this.#partial && !this.#finished) await this.#partial.discard();
  }
}
