/**
 * zstd through the system's libzstd.so.1, which the addon loads at run time
 * (native/copy/zstd.cc: one context per pool thread, reused). Every call runs
 * on the libuv thread pool, never on the event loop.
 */
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';

let checked = false;
/** The addon, once libzstd is known to be loaded; UNSUPPORTED otherwise. */
export function requireZstd(): typeof native {
  if (!checked) {
    const info = native.zstdInfo();
    if (info.error !== undefined) {
      throw new LowtideError('UNSUPPORTED', `zstd is unavailable: ${info.error} (Debian package libzstd1)`);
    }
    checked = true;
  }
  return native;
}

/** The largest input a decompression may produce unless told otherwise. */
const DEFAULT_MAX_PLAIN = 256 * 1024 * 1024;

export function compress(data: Buffer, level: number): Promise<Buffer> {
  return requireZstd()
    .zstdCompress(data, level)
    .catch((err: unknown) => {
      throw toLowtideError(err, 'INTERNAL');
    });
}

/** Decompresses; rejects on corrupt input or a result larger than `maxSize`. */
export function decompress(data: Buffer, maxSize = DEFAULT_MAX_PLAIN): Promise<Buffer> {
  return requireZstd()
    .zstdDecompress(data, maxSize)
    .catch((err: unknown) => {
      throw toLowtideError(err, 'INVALID_ARGUMENT');
    });
}

/**
 * Buffers reused between chunks (chunk files read back, decompressed chunks;
 * new chunks are compressed natively, into per-thread buffers): a chunk's bytes
 * live only until they are used, and memory touched before costs nothing to
 * write again while fresh memory costs a page fault per page (~5 ms per MiB on
 * this project's VMs). At most POOL_MAX buffers of each size are kept.
 */
const POOL_MAX = 16;
const pool = new Map<number, Buffer[]>();
export function takeBuffer(size: number): Buffer {
  return pool.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
}
export function giveBuffer(buf: Buffer): void {
  const list = pool.get(buf.length) ?? [];
  if (list.length < POOL_MAX) list.push(buf);
  pool.set(buf.length, list);
}

/** Decompresses into `dst` (a whole frame or frames); resolves with the size. */
export function decompressInto(data: Buffer, dst: Buffer): Promise<number> {
  return requireZstd()
    .zstdDecompressInto(data, dst)
    .catch((err: unknown) => {
      throw toLowtideError(err, 'INVALID_ARGUMENT');
    });
}
