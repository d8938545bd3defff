/**
 * Every read a qcow2 guest view issues is the job's own, as the canary
 * counts them: against a device nothing else reads (ext4 on a loop device
 * over a file on tmpfs, which counts as itself), the device's reads while a
 * chain with data and compressed clusters is read are the reader's
 * submitted reads one for one, and an image job of it sees no one else's
 * reads and boosts. The guest view's requests follow the block size the
 * throttle sets while it runs.
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageSource, openSource } from '../../lib/index.js';
import { StorageIoCounter } from '../../lib/throttle/index.js';
import { cmp } from '../helpers/cli.js';
import { LoopFs, shmLoopUnavailableReason } from '../helpers/loop-fs.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { patternBytes, writeSparseFile } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const GUEST = 160 * MiB;

const reason =
  shmLoopUnavailableReason('ext4') ??
  (['qemu-img', 'qemu-io'].every(hasCommand) ? undefined : 'qemu-img or qemu-io is missing (qemu-utils)');

function run(cmd: string, args: string[], cwd?: string): void {
  execFileSync(cmd, args, { stdio: 'ignore', cwd });
}

/**
 * base.qcow2: compressed clusters (qemu-img convert -c of written data);
 * top.qcow2 over it: writes of 256 KiB to 4 MiB at pseudo-random places.
 */
function makeChain(dir: string): string {
  const raw = join(dir, 'plain.raw');
  // 24 MiB written: in each 64 KiB cluster 16 KiB of noise and zeros, so
  // that the compressed clusters are a few KiB each.
  const pieces: { offset: number; data: Buffer }[] = [];
  for (let i = 0; i < 24; i++) {
    const data = Buffer.alloc(MiB);
    for (let c = 0; c < 16; c++) patternBytes(16 * 1024, i * 16 + c + 1).copy(data, c * 64 * 1024);
    pieces.push({ offset: ((i * 7919) % 150) * MiB, data });
  }
  writeSparseFile(raw, GUEST, pieces);
  run('qemu-img', [
    'convert',
    '-q',
    '-c',
    '-f',
    'raw',
    '-O',
    'qcow2',
    '-o',
    'cluster_size=65536',
    raw,
    join(dir, 'base.qcow2'),
  ]);
  rmSync(raw);
  const top = join(dir, 'top.qcow2');
  run(
    'qemu-img',
    ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', 'base.qcow2', '-F', 'qcow2', top],
    dir,
  );
  const more: string[] = [];
  for (let i = 0; i < 40; i++) {
    const length = 256 * 1024 * (1 + ((i * 13) % 16));
    more.push('-c', `write -P ${100 + i} ${((i * 104729) % 600) * 256 * 1024} ${length}`);
  }
  run('qemu-io', ['-f', 'qcow2', ...more, top]);
  return top;
}

describe('a qcow2 guest view against the counters of a device nobody else reads', () => {
  let fs: LoopFs | undefined;
  let top = '';
  const out = (name: string): string => fs!.dir.file(name);

  beforeAll(() => {
    if (reason) return;
    fs = new LoopFs('ext4', 512, false, '/dev/shm');
    top = makeChain(fs.mountPoint);
    run('sync', []);
  }, 120_000);

  afterAll(() => fs?.remove());

  it("the device's reads are the guest view's submitted reads, compressed clusters included", async () => {
    if (skipReason('qcow2 own reads', reason)) return;
    // Out of the page cache, so that a read the job did not count would reach the device.
    for (const f of ['base.qcow2', 'top.qcow2'])
      run('dd', [`if=${fs!.file(f)}`, 'iflag=nocache', 'count=0', 'status=none']);
    const counter = StorageIoCounter.open(top)!;
    expect(counter.exact).toBe(true);
    const src = await openSource(top, { format: 'qcow2', direct: 'on' });
    try {
      const layers = src.virtualDisk!.layers;
      expect(layers.map((l) => l.format)).toEqual(['qcow2', 'qcow2']);
      const allocation = await src.allocation();
      // Requests the device takes whole (a larger one may become two, each counted).
      const blockSize = Math.min(counter.maxUnsplitBytes, 256 * 1024);
      const before = counter.read()!.readsSubmitted;
      const reader = src.read(allocation, { blockSize, queueDepth: 8 });
      let bytes = 0;
      for await (const b of reader) bytes += b.length;
      expect(bytes).toBe(allocation.reduce((n, e) => n + e.length, 0));
      const own = reader.submittedReads();
      expect(own).toBeGreaterThan(0);
      expect(counter.read()!.readsSubmitted - before).toBe(own);
    } finally {
      await src.close();
      counter.close();
    }
  }, 60_000);

  it('requests follow the block size set while the read runs', async () => {
    if (skipReason('qcow2 request sizes', reason)) return;
    const src = await openSource(top, { format: 'qcow2', direct: 'on' });
    try {
      const allocation = await src.allocation();
      const reader = src.read(allocation, { blockSize: 64 * 1024, maxBlockSize: MiB, queueDepth: 4 });
      // As a throttle does, before the first block and again later.
      reader.setBlockSize(512 * 1024);
      let bytes = 0;
      let blocks = 0;
      for await (const b of reader) {
        bytes += b.length;
        // No block crosses a multiple of maxBlockSize in guest offsets.
        expect(Math.floor(b.offset / MiB)).toBe(Math.floor((b.offset + b.length - 1) / MiB));
        if (++blocks === 20) reader.setBlockSize(MiB);
      }
      // Requests of the block size set, not of the 64 KiB the read started with.
      expect(reader.stats().requestsCompleted).toBeLessThan(bytes / (128 * 1024));
    } finally {
      await src.close();
    }
  }, 60_000);

  it('an image job sees no one else on the device and boosts; its image equals qemu-img convert', async () => {
    if (skipReason('qcow2 image job on an idle device', reason)) return;
    // Written beside the backing file, on tmpfs: not to the device counted.
    const image = out('image.raw');
    const r = await imageSource({ source: top, output: image, format: 'qcow2', force: true });
    const b = r.throttle.probes!.boost;
    expect(r.throttle.storageDevices).toEqual([fs!.device!.replace('/dev/', '')]);
    expect(b.running.counted).toBe(true);
    expect(b.running.stopped).toBeUndefined();
    // None of the job's reads is taken for someone else's. (A read the
    // device splits counts twice: a few a second at most, far below a load.)
    expect(b.running.reads / (b.running.countedMs / 1000)).toBeLessThan(20);
    expect(b.boostedMs).toBeGreaterThan(0);
    const raw = out('qemu.raw');
    run('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'raw', top, raw]);
    expect(cmp(image, raw)).toBe(true);
  }, 120_000);
});
