/**
 * A qcow2 guest view read from the block device under its files
 * (readFrom: 'device'): the guest extents map to ranges of the layer files
 * (L1/L2, through the backing chain), each layer file maps to device offsets
 * (FIEMAP). On XFS with reflink on a loop device, the image read that way
 * equals `qemu-img convert -O raw`; a layer changed during the read is
 * SOURCE_CHANGED.
 */
import { appendFileSync, copyFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, imageSource, initRepository } from '../../lib/index.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { changeWhileReading, LoopFs, loopFsUnavailableReason } from '../helpers/loop-fs.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const GUEST = 24 * MiB;

const reason =
  loopFsUnavailableReason('xfs') ??
  (['qemu-img', 'qemu-io'].every(hasCommand) ? undefined : 'qemu-img or qemu-io is missing (qemu-utils)');

function run(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], cwd });
}

/**
 * base.qcow2 (64 KiB clusters): data at pseudo-random offsets, a compressed
 * stretch; top.qcow2 over it (32 KiB clusters): its own writes and zero clusters.
 */
function makeChain(dir: string): { top: string; raw: string } {
  const base = `${dir}/base.qcow2`;
  const top = `${dir}/top.qcow2`;
  const plain = `${dir}/plain.raw`;
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', base, String(GUEST)]);
  const writes: string[] = [];
  for (let i = 0; i < 12; i++) {
    const off = ((i * 7919) % 20) * MiB + (i % 3) * 65536;
    writes.push('-c', `write -P ${(i * 37) % 255 || 1} ${off} ${65536 * (1 + (i % 9))}`);
  }
  run('qemu-io', ['-f', 'qcow2', ...writes, base]);
  // Compressed clusters: convert a written raw stretch with -c, then copy it in as the new base.
  run('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'raw', base, plain]);
  const compressed = `${dir}/base-c.qcow2`;
  run('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', plain, compressed]);
  // Half of the base rewritten uncompressed, so both kinds are in the chain.
  run('qemu-io', ['-f', 'qcow2', '-c', `write -P 201 0 ${12 * MiB}`, compressed]);
  run('mv', [compressed, base]);
  run(
    'qemu-img',
    ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=32768', '-b', 'base.qcow2', '-F', 'qcow2', top],
    dir,
  );
  run('qemu-io', [
    '-f',
    'qcow2',
    '-c',
    `write -P 77 ${3 * MiB + 32768} ${2 * MiB}`,
    '-c',
    `write -z ${8 * MiB} ${MiB}`,
    '-c',
    `write -P 78 ${20 * MiB} ${3 * MiB + 4096}`,
    top,
  ]);
  const raw = `${dir}/top.raw`;
  run('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'raw', top, raw]);
  return { top, raw };
}

describe('a qcow2 chain on XFS read from the device under its files', () => {
  let fs: LoopFs | undefined;
  const out = new TempDir('lowtide-qcow2-device-');
  let chain: { top: string; raw: string } | undefined;

  beforeAll(() => {
    if (reason) return;
    fs = new LoopFs('xfs', 320);
    chain = makeChain(fs.mountPoint);
  });
  afterAll(() => {
    fs?.remove();
    out.remove();
  });

  it('images the guest view from the device: equal to qemu-img convert, every layer on the device', async () => {
    if (skipReason('qcow2 read from the device', reason)) return;
    const img = out.file('device.raw');
    const s = await imageSource({ source: chain!.top, output: img, format: 'qcow2', readFrom: 'device' });
    expect(cmp(img, chain!.raw)).toBe(true);
    const r = s.readFrom!;
    expect(r.device).toBe(fs!.device);
    expect(r.layers?.map((l) => l.device)).toEqual([fs!.device, fs!.device]);
    expect(r.layers?.every((l) => l.bytesFromDevice > 0)).toBe(true);
    // Compressed clusters are read like data (their bytes from the device,
    // then decompressed): none is read through the files. (A few KiB of an
    // image's data may lie in an extent the file system has not written yet:
    // zeros, read through the file.)
    expect(r.fallbacks.filter((f) => f.reason.startsWith('compressed'))).toEqual([]);
    expect(r.bytesFromFile).toBeLessThan(64 * 1024);
    expect(r.bytesFromDevice + r.bytesFromFile).toBe(s.plan.bytesToRead);
    // The same image read through the files, no report.
    const plain = await imageSource({ source: chain!.top, output: out.file('file.raw'), format: 'qcow2' });
    expect(plain.readFrom).toBeUndefined();
    expect(cmp(out.file('file.raw'), chain!.raw)).toBe(true);
  });

  it('a reflinked copy of the chain reads the same blocks, and a backup from it stores nothing new', async () => {
    if (skipReason('qcow2 reflink backup from the device', reason)) return;
    const dir = `${fs!.mountPoint}/clone`;
    run('mkdir', ['-p', dir]);
    for (const f of ['base.qcow2', 'top.qcow2'])
      run('cp', ['--reflink=always', `${fs!.mountPoint}/${f}`, `${dir}/${f}`]);
    const repo = await initRepository(out.file('repo'), { chunkSize: 256 * 1024 });
    const viaFile = await backup({ source: chain!.top, repository: repo, parent: null, format: 'qcow2' });
    const viaDevice = await backup({
      source: `${dir}/top.qcow2`,
      repository: repo,
      parent: null,
      format: 'qcow2',
      readFrom: 'device',
    });
    expect(viaFile.readFrom).toBeUndefined();
    expect(viaDevice.readFrom!.bytesFromDevice).toBeGreaterThan(0);
    expect(viaDevice.manifest.stats.chunksNew).toBe(0);
    expect(viaDevice.manifest.stats.chunksReused).toBe(
      viaFile.manifest.stats.chunksNew + viaFile.manifest.stats.chunksReused,
    );
  });

  it('fails with SOURCE_CHANGED when a layer changes while it is read', async () => {
    if (skipReason('a changing qcow2 layer', reason)) return;
    const dir = `${fs!.mountPoint}/changing`;
    run('mkdir', ['-p', dir]);
    for (const f of ['base.qcow2', 'top.qcow2']) copyFileSync(`${fs!.mountPoint}/${f}`, `${dir}/${f}`);
    const img = out.file('changing.raw');
    const growing = changeWhileReading(() => appendFileSync(`${dir}/base.qcow2`, patternBytes(65536, 5)));
    await expect(
      imageSource({ source: `${dir}/top.qcow2`, output: img, format: 'qcow2', ...growing.options }),
    ).rejects.toMatchObject({ code: 'SOURCE_CHANGED', message: expect.stringContaining('base.qcow2') as unknown });
    expect(growing.changed()).toBe(true);
    expect(existsSync(img)).toBe(false);
  });

  it('image --read-from-device --format qcow2 from the command line', () => {
    if (skipReason('lowtide image of a qcow2 from the device', reason)) return;
    const img = out.file('cli.raw');
    const r = lowtide(['image', '--read-from-device', '--format', 'qcow2', '--json', chain!.top, img]);
    expect(r.status, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as { readFrom: { bytesFromDevice: number; layers: unknown[] } };
    expect(s.readFrom.bytesFromDevice).toBeGreaterThan(0);
    expect(s.readFrom.layers).toHaveLength(2);
    expect(cmp(img, chain!.raw)).toBe(true);
  });
});

describe('a qcow2 chain on btrfs: logical offsets, read through the files', () => {
  const btrfsReason =
    loopFsUnavailableReason('btrfs') ??
    (['qemu-img', 'qemu-io'].every(hasCommand) ? undefined : 'qemu-img or qemu-io is missing (qemu-utils)');
  let fs: LoopFs | undefined;
  const out = new TempDir('lowtide-qcow2-btrfs-');

  afterAll(() => {
    fs?.remove();
    out.remove();
  });

  it('says why for every layer and reads the guest view through the files', async () => {
    if (skipReason('qcow2 on btrfs read from the device', btrfsReason)) return;
    fs = new LoopFs('btrfs', 256);
    const chain = makeChain(fs.mountPoint);
    const img = out.file('btrfs.raw');
    const s = await imageSource({ source: chain.top, output: img, format: 'qcow2', readFrom: 'device' });
    expect(cmp(img, chain.raw)).toBe(true);
    const r = s.readFrom!;
    expect(r.device).toBeNull();
    expect(r.bytesFromDevice).toBe(0);
    expect(r.bytesFromFile).toBe(s.plan.bytesToRead);
    expect(r.reason).toContain('btrfs');
    expect(r.layers?.map((l) => l.device)).toEqual([null, null]);
  });
});
