/** Temporary directories and files for tests; everything is removed afterwards. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export class TempDir {
  readonly path: string;
  /** A new directory named `prefix` and a random tail in `parent` (default: the system's temporary directory). */
  constructor(prefix = 'lowtide-test-', parent = tmpdir()) {
    this.path = mkdtempSync(join(parent, prefix));
  }
  file(name: string): string {
    return join(this.path, name);
  }
  remove(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function patternBytes(length: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf[i] = x & 0xff;
  }
  return buf;
}

export function writeRandomFile(path: string, length: number): Buffer {
  const data = randomBytes(length);
  writeFileSync(path, data);
  return data;
}

/** A sparse file of `size` bytes with `data` written at each given offset. */
export function writeSparseFile(path: string, size: number, pieces: { offset: number; data: Buffer }[]): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    for (const p of pieces) writeSync(fd, p.data, 0, p.data.length, p.offset);
  } finally {
    closeSync(fd);
  }
}
