/**
 * The guest view of qcow2 images, checked against QEMU's own tools: the bytes
 * equal `qemu-img convert -O raw`, the allocation equals the data ranges of
 * `qemu-img map --output=json`.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { openSource, type Extent } from '../../lib/index.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';

const tmp = new TempDir('lowtide-qcow2-');
afterAll(() => tmp.remove());

const KiB = 1024;
const MiB = 1024 * KiB;
const missing = ['qemu-img', 'qemu-io'].find((t) => !hasCommand(t));
const noQemu = missing === undefined ? undefined : `${missing} is not installed (Debian: qemu-utils)`;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** qemu-io writes at pseudo-random offsets (xorshift with `seed`): data, and zeroes with write -z. */
function randomWrites(image: string, format: string, size: number, count: number, seed: number): void {
  let x = seed;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 512 * (1 + Math.floor(next() * 400));
    const off = 512 * Math.floor((next() * (size - len)) / 512);
    const zero = next() < 0.25;
    cmds.push('-c', zero ? `write -z ${off} ${len}` : `write -P ${1 + Math.floor(next() * 254)} ${off} ${len}`);
  }
  run('qemu-io', ['-f', format, ...cmds, image]);
}

function qemuRaw(image: string): Buffer {
  const out = `${image}.oracle.raw`;
  run('qemu-img', ['convert', '-O', 'raw', image, out]);
  return readFileSync(out);
}

/**
 * The ranges qemu-img map says hold data, merged. lowtide counts a raw
 * backing file (at chain depth `rawDepth`) as allocated in full; qemu-img map
 * reports its holes as present but without data, so those count too.
 */
function qemuData(image: string, rawDepth?: number): Extent[] {
  const map = JSON.parse(run('qemu-img', ['map', '--output=json', image])) as {
    start: number;
    length: number;
    data: boolean;
    present: boolean;
    depth: number;
  }[];
  const out: { offset: number; length: number }[] = [];
  for (const m of map) {
    if (!m.data && !(m.present && m.depth === rawDepth)) continue;
    const last = out.at(-1);
    if (last && last.offset + last.length === m.start) last.length += m.length;
    else out.push({ offset: m.start, length: m.length });
  }
  return out;
}

async function guestBytes(path: string, format: 'qcow2' | 'auto', blockSize = 256 * KiB): Promise<Buffer> {
  const src = await openSource(path, { format });
  try {
    const out = Buffer.alloc(src.size, 0xee);
    let covered = 0;
    for await (const b of src.read(undefined, { blockSize, queueDepth: 8 })) {
      b.data.copy(out, b.offset);
      covered += b.length;
    }
    expect(covered).toBe(src.size);
    return out;
  } finally {
    await src.close();
  }
}

async function check(path: string, format: 'qcow2' | 'auto' = 'qcow2', rawDepth?: number): Promise<void> {
  const oracle = qemuRaw(path);
  const mine = await guestBytes(path, format);
  expect(mine.length).toBe(oracle.length);
  expect(mine.equals(oracle)).toBe(true);
  const src = await openSource(path, { format });
  try {
    expect(src.format).toBe('qcow2');
    const expected = qemuData(path, rawDepth);
    expect(await src.allocation()).toEqual(expected);
    expect(src.virtualDisk?.allocatedBytes).toBe(expected.reduce((n, e) => n + e.length, 0));
  } finally {
    await src.close();
  }
}

describe('qcow2 guest view', () => {
  const size = 12 * MiB + 64 * KiB;
  for (const [name, opts] of [
    ['512 B clusters', 'cluster_size=512'],
    ['4 KiB clusters, version 2', 'cluster_size=4096,compat=0.10'],
    ['64 KiB clusters', 'cluster_size=65536'],
    ['2 MiB clusters', 'cluster_size=2097152'],
    ['extended L2, 64 KiB clusters', 'cluster_size=65536,extended_l2=on'],
    ['extended L2, 2 MiB clusters', 'cluster_size=2097152,extended_l2=on'],
  ] as const) {
    it(`equals qemu-img convert and qemu-img map: ${name}, random writes and zeroes`, async () => {
      if (skipReason('qcow2 oracle', noQemu)) return;
      const img = tmp.file(`${opts.replace(/[=,]/g, '-')}.qcow2`);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts, img, String(size)]);
      randomWrites(img, 'qcow2', size, 40, 0x9e3779b9 ^ opts.length);
      await check(img);
    });
  }

  for (const type of ['zlib', 'zstd']) {
    it(`decompresses ${type} compressed clusters (qemu-img convert -c)`, async () => {
      if (skipReason('qcow2 oracle', noQemu)) return;
      const plain = tmp.file(`plain-${type}.raw`);
      run('qemu-img', ['create', '-q', '-f', 'raw', plain, String(size)]);
      randomWrites(plain, 'raw', size, 30, 77);
      // Compressible text as well as the qemu-io patterns.
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x41 5M 300k', plain]);
      const img = tmp.file(`compressed-${type}.qcow2`);
      run('qemu-img', ['convert', '-q', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, plain, img]);
      await check(img);
      // Partial writes over compressed clusters.
      randomWrites(img, 'qcow2', size, 10, 5);
      await check(img);
    });
  }

  it('follows a backing chain of qcow2 and raw files, including a shorter backing file', async () => {
    if (skipReason('qcow2 oracle', noQemu)) return;
    const base = tmp.file('chain-base.raw');
    run('qemu-img', ['create', '-q', '-f', 'raw', base, String(6 * MiB)]);
    randomWrites(base, 'raw', 6 * MiB, 20, 11);
    const mid = tmp.file('chain-mid.qcow2');
    run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      'cluster_size=4096',
      '-b',
      'chain-base.raw',
      '-F',
      'raw',
      mid,
      String(10 * MiB),
    ]);
    randomWrites(mid, 'qcow2', 10 * MiB, 20, 12);
    const top = tmp.file('chain-top.qcow2');
    run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      'cluster_size=65536,extended_l2=on',
      '-b',
      'chain-mid.qcow2',
      '-F',
      'qcow2',
      top,
      String(size),
    ]);
    randomWrites(top, 'qcow2', size, 20, 13);
    await check(top, 'qcow2', 2);
    const src = await openSource(top, { format: 'qcow2' });
    expect(src.virtualDisk?.layers.map((l) => [l.format, l.size])).toEqual([
      ['qcow2', size],
      ['qcow2', 10 * MiB],
      ['raw', 6 * MiB],
    ]);
    await src.close();
  });

  it('reads zero clusters as zeros and never reads them (write -z over data)', async () => {
    if (skipReason('qcow2 oracle', noQemu)) return;
    const img = tmp.file('zero.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(4 * MiB)]);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 2M', '-c', 'write -z 512k 1M', img]);
    await check(img);
    const src = await openSource(img, { format: 'qcow2' });
    expect(await src.allocation()).toEqual([
      { offset: 0, length: 512 * KiB },
      { offset: 1536 * KiB, length: 512 * KiB },
    ]);
    await src.close();
  });

  it("format 'raw' (the default) reads the container; 'auto' detects qcow2 in a regular file", async () => {
    if (skipReason('qcow2 oracle', noQemu)) return;
    const img = tmp.file('detect.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(2 * MiB)]);
    const raw = await openSource(img);
    expect(raw.format).toBe('raw');
    expect(raw.size).toBe(readFileSync(img).length);
    await raw.close();
    const auto = await openSource(img, { format: 'auto' });
    expect([auto.format, auto.size, auto.virtualDisk?.probed]).toEqual(['qcow2', 2 * MiB, true]);
    await auto.close();
    const plain = tmp.file('plain.raw');
    writeFileSync(plain, Buffer.alloc(64 * KiB, 7));
    const notQcow2 = await openSource(plain, { format: 'auto' });
    expect(notQcow2.format).toBe('raw');
    await notQcow2.close();
  });
});
