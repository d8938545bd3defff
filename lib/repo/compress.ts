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
