/**
 * zstd through @mongodb-js/zstd's native bindings (its index.js ignores the
 * level). Both calls run on the libuv thread pool, never on the event loop.
 */
import { createRequire } from 'node:module';

interface ZstdBindings {
  compress(data: Buffer, level?: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
}

const require = createRequire(import.meta.url);
const zstd = require('@mongodb-js/zstd/bindings') as ZstdBindings;

export function compress(data: Buffer, level: number): Promise<Buffer> {
  return zstd.compress(data, level);
}

export function decompress(data: Buffer): Promise<Buffer> {
  return zstd.decompress(data);
}

/** Bytes sampled to decide whether a chunk is worth compressing. */
const SAMPLE_PIECES = 4;
const SAMPLE_PIECE = 16 * 1024;

/**
 * Compresses `data` unless a sample says it will not shrink: four 16 KiB
 * pieces spread over the data, compressed at level 1; if they save less than
 * 3 %, the whole is stored raw. Incompressible data (media, archives,
 * encrypted or random blocks) then costs 1/16 of a full compression.
 * Returns null when the data should be stored raw.
 */
export async function compressIfWorthIt(data: Buffer, level: number): Promise<Buffer | null> {
  if (data.length >= SAMPLE_PIECES * SAMPLE_PIECE * 4) {
    const step = Math.floor(data.length / SAMPLE_PIECES);
    const sample = Buffer.concat(
      Array.from({ length: SAMPLE_PIECES }, (_, i) => data.subarray(i * step, i * step + SAMPLE_PIECE)),
    );
    const packedSample = await compress(sample, 1);
    if (packedSample.length > sample.length * 0.97) return null;
  }
  const packed = await compress(data, level);
  return packed.length < data.length ? packed : null;
}
