/**
 * The offset table (FIEMAP) and reads from the device under a file, on real
 * file systems made on loop devices: XFS (reflink) and ext4 are
 * device-mappable and checked against xfs_io's own FIEMAP listing; btrfs
 * (logical offsets) and tmpfs (no FIEMAP) are not, and reads go through the
 * file. Every read from the device is compared byte for byte with the file.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  statSync,
  writeFileSync,
  openSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, imageSource, initRepository, mapFile, type OffsetTable } from '../../lib/index.js';
import { splitByTable } from '../../lib/advanced.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { changeWhileReading, LoopFs, loopFsUnavailableReason, type LoopFsKind } from '../helpers/loop-fs.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;
/** Data at 0 (4 MiB), a hole, an unwritten extent at 8 MiB (2 MiB), a hole, data at 12 MiB, a hole, a short tail at 16 MiB. */
const SIZE = 16 * MiB + 1000;
const DATA_BYTES = 4 * MiB + MiB + 1000;

function writeFixture(path: string, seed = 1): void {
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, patternBytes(4 * MiB, seed), 0, 4 * MiB, 0);
    writeSync(fd, patternBytes(MiB, seed + 1), 0, MiB, 12 * MiB);
    writeSync(fd, patternBytes(1000, seed + 2), 0, 1000, 16 * MiB);
  } finally {
    closeSync(fd);
  }
  // Allocated, never written: reads as zeros.
  execFileSync('fallocate', ['--keep-size', '--offset', String(8 * MiB), '--length', String(2 * MiB), path]);
}

/** Per 4 KiB block of the file: 'hole', 'unwritten' or the device offset of its data, from the table. */
function blocksOfTable(t: OffsetTable): string[] {
  const out: string[] = [];
  for (let b = 0; b * BLOCK < t.size; b++) {
    const at = b * BLOCK;
    const run = t.runs.find((r) => r.offset <= at && at < r.offset + r.length);
    if (run === undefined) out.push('missing');
    else if (run.kind === 'zero') out.push(run.reason);
    else if (run.kind === 'device') out.push(`@${run.deviceOffset + (at - run.offset)}`);
    else out.push(`file: ${run.reason}`);
  }
  return out;
}

/** The same from `xfs_io -c "fiemap -v"` (512-byte units; flag 0x800 is unwritten). */
function blocksOfXfsIo(path: string, size: number): string[] {
  const text = execFileSync('xfs_io', ['-r', '-c', 'fiemap -v', path], { encoding: 'utf8' });
  const ranges: { start: number; end: number; what: (at: number) => string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*\d+:\s*\[(\d+)\.\.(\d+)\]:\s*(hole|(\d+)\.\.(\d+))\s+\d+(?:\s+(0x[0-9a-f]+))?/.exec(line);
    if (!m) continue;
    const start = Number(m[1]) * 512;
    const end = (Number(m[2]) + 1) * 512;
    if (m[3] === 'hole') {
      ranges.push({ start, end, what: () => 'hole' });
      continue;
    }
    const phys = Number(m[4]) * 512;
    const flags = m[6] !== undefined ? parseInt(m[6], 16) : 0;
    ranges.push({ start, end, what: (at) => ((flags & 0x800) !== 0 ? 'unwritten' : `@${phys + (at - start)}`) });
  }
  const out: string[] = [];
  for (let b = 0; b * BLOCK < size; b++) {
    const at = b * BLOCK;
    const r = ranges.find((x) => x.start <= at && at < x.end);
    out.push(r === undefined ? 'hole' : r.what(at));
  }
  return out;
}

describe('splitByTable', () => {
  const table: OffsetTable = {
    path: 'f',
    size: 40960,
    fileSystem: 'xfs',
    device: '/dev/x',
    deviceMappable: true,
    runs: [
      { kind: 'device', offset: 0, length: 8192, deviceOffset: 1 << 20, flags: [] },
      { kind: 'device', offset: 8192, length: 8192, deviceOffset: (1 << 20) + 8192, flags: ['SHARED'] },
      { kind: 'zero', offset: 16384, length: 8192, reason: 'unwritten' },
      { kind: 'file', offset: 24576, length: 4096, reason: 'FIEMAP flags DELALLOC', flags: ['DELALLOC'] },
      { kind: 'device', offset: 28672, length: 12288, deviceOffset: 1 << 30, flags: [] },
    ],
    bytesOnDevice: 28672,
    bytesZero: 8192,
    bytesThroughFile: 4096,
  };

  it('cuts extents along the runs and keeps the bytes they cover', () => {
    expect(splitByTable([{ offset: 512, length: 40000 }], table)).toEqual([
      { offset: 512, length: 16384 - 512, deviceOffset: (1 << 20) + 512 },
      { offset: 16384, length: 28672 - 16384, deviceOffset: -1 },
      { offset: 28672, length: 40512 - 28672, deviceOffset: 1 << 30 },
    ]);
    expect(splitByTable([{ offset: 30000, length: 100 }], table)).toEqual([
      { offset: 30000, length: 100, deviceOffset: (1 << 30) + 30000 - 28672 },
    ]);
  });

  it('reads past the table through the file, and nothing from a table that is not mappable', () => {
    expect(splitByTable([{ offset: 40000, length: 2000 }], table)).toEqual([
      { offset: 40000, length: 960, deviceOffset: (1 << 30) + 40000 - 28672 },
      { offset: 40960, length: 1040, deviceOffset: -1 },
    ]);
    expect(splitByTable([{ offset: 0, length: 40960 }], { ...table, deviceMappable: false })).toEqual([
      { offset: 0, length: 40960, deviceOffset: -1 },
    ]);
  });
});

function fsUnavailable(kind: LoopFsKind, partitioned = false): string | undefined {
  return (
    loopFsUnavailableReason(kind, partitioned) ??
    (hasCommand('xfs_io') ? undefined : 'xfs_io is missing (xfsprogs)') ??
    (hasCommand('fallocate') ? undefined : 'fallocate is missing (util-linux)')
  );
}

describe.each([
  ['xfs', false],
  ['ext4', false],
  ['xfs', true],
] as const)('a file on %s (partitioned: %s) on a loop device: device-mappable', (kind, partitioned) => {
  const reason = fsUnavailable(kind, partitioned);
  const what = `offset table on ${kind}${partitioned ? ' in a partition' : ''}`;
  let fs: LoopFs | undefined;
  const out = new TempDir();

  beforeAll(() => {
    if (reason) return;
    fs = new LoopFs(kind, kind === 'xfs' ? 320 : 96, partitioned);
    writeFixture(fs.file('disk.img'));
  });
  afterAll(() => {
    fs?.remove();
    out.remove();
  });

  it('maps the file as xfs_io fiemap -v lists it', async () => {
    if (skipReason(what, reason)) return;
    const path = fs!.file('disk.img');
    const t = await mapFile(path);
    expect(t.fileSystem).toBe(kind);
    expect(t.deviceMappable).toBe(true);
    expect(t.device).toBe(fs!.device);
    expect(t.size).toBe(SIZE);
    expect(t.bytesOnDevice + t.bytesZero + t.bytesThroughFile).toBe(SIZE);
    expect(t.bytesOnDevice).toBe(DATA_BYTES);
    expect(blocksOfTable(t)).toEqual(blocksOfXfsIo(path, SIZE));
    expect(t.runs.some((r) => r.kind === 'zero' && r.reason === 'unwritten')).toBe(true);
    // A sub-range maps to the same device offsets.
    const part = await mapFile(path, [{ offset: 12 * MiB + 4096, length: 8192 }]);
    const whole = t.runs.find(
      (r) => r.kind === 'device' && r.offset <= 12 * MiB + 4096 && r.offset + r.length > 12 * MiB,
    );
    expect(part.runs).toEqual([
      expect.objectContaining({
        kind: 'device',
        offset: 12 * MiB + 4096,
        length: 8192,
        deviceOffset: whole!.kind === 'device' ? whole!.deviceOffset + (12 * MiB + 4096 - whole!.offset) : -1,
      }),
    ]);
  });

  it('images the file from the device byte for byte, zeros through the file', async () => {
    if (skipReason(what, reason)) return;
    const path = fs!.file('disk.img');
    const img = out.file('from-device.img');
    const s = await imageSource({ source: path, output: img, readFrom: 'device', force: true });
    expect(cmp(path, img)).toBe(true);
    expect(s.readFrom).toBeDefined();
    expect(s.readFrom!.device).toBe(fs!.device);
    expect(s.readFrom!.bytesFromDevice).toBe(DATA_BYTES);
    expect(s.readFrom!.bytesFromFile).toBe(SIZE - DATA_BYTES);
    expect(s.readFrom!.fallbacks.map((f) => f.reason).sort()).toEqual(['hole (zeros)', 'unwritten extent (zeros)']);
    expect(s.throttle.controller).toBeDefined();
    // The plain read gives the same image and no readFrom report.
    const plain = await imageSource({ source: path, output: out.file('plain.img'), force: true });
    expect(plain.readFrom).toBeUndefined();
    expect(cmp(img, out.file('plain.img'))).toBe(true);
  });
});

describe('XFS with reflink on a loop device: shared blocks, backups, a changing file', () => {
  const reason = fsUnavailable('xfs') ?? (hasCommand('cp') ? undefined : 'cp is missing');
  let fs: LoopFs | undefined;
  const out = new TempDir();

  beforeAll(() => {
    if (reason) return;
    fs = new LoopFs('xfs', 320);
    writeFixture(fs.file('disk.img'));
    execFileSync('cp', ['--reflink=always', fs.file('disk.img'), fs.file('clone.img')]);
  });
  afterAll(() => {
    fs?.remove();
    out.remove();
  });

  it('a reflinked copy maps to the same device blocks, flagged SHARED', async () => {
    if (skipReason('reflink on XFS', reason)) return;
    const a = await mapFile(fs!.file('disk.img'));
    const b = await mapFile(fs!.file('clone.img'));
    const dataOf = (t: OffsetTable): string[] => blocksOfTable(t).filter((x) => x.startsWith('@'));
    expect(dataOf(b)).toEqual(dataOf(a));
    expect(dataOf(b).length).toBe(Math.ceil(DATA_BYTES / BLOCK));
    for (const r of b.runs) if (r.kind === 'device') expect(r.flags).toContain('SHARED');
    const img = out.file('clone.img');
    await imageSource({ source: fs!.file('clone.img'), output: img, readFrom: 'device' });
    expect(cmp(img, fs!.file('disk.img'))).toBe(true);
  });

  it('a backup read from the device stores nothing new after one read through the file', async () => {
    if (skipReason('backup from the device', reason)) return;
    const repo = await initRepository(out.file('repo'), { chunkSize: 256 * 1024 });
    const source = fs!.file('disk.img');
    const viaFile = await backup({ source, repository: repo, parent: null });
    const viaDevice = await backup({ source, repository: repo, parent: null, readFrom: 'device' });
    expect(viaFile.readFrom).toBeUndefined();
    expect(viaDevice.readFrom!.bytesFromDevice).toBe(DATA_BYTES);
    expect(viaDevice.manifest.stats.chunksNew).toBe(0);
    expect(viaDevice.manifest.stats.chunksReused).toBe(
      viaFile.manifest.stats.chunksNew + viaFile.manifest.stats.chunksReused,
    );
    expect(viaDevice.manifest.stats.chunksZero).toBe(viaFile.manifest.stats.chunksZero);
  });

  it('refuses when the file changes while it is read from the device', async () => {
    if (skipReason('a changing file', reason)) return;
    const source = fs!.file('changing.img');
    copyFileSync(fs!.file('disk.img'), source);
    const img = out.file('changing-out.img');
    const growing = changeWhileReading(() => appendFileSync(source, patternBytes(8192, 9)));
    await expect(imageSource({ source, output: img, ...growing.options })).rejects.toMatchObject({
      code: 'SOURCE_CHANGED',
      message: expect.stringContaining('changed size') as unknown,
    });
    expect(growing.changed()).toBe(true);
    expect(existsSync(img)).toBe(false);
  });

  it('refuses a block device as a source to read from its device', async () => {
    if (skipReason('a block device source', reason)) return;
    await expect(
      imageSource({ source: fs!.device!, output: out.file('dev.img'), readFrom: 'device' }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('readFrom') as unknown });
  });

  it('lowtide map --json prints the table; image --read-from-device reports the device', () => {
    if (skipReason('lowtide map on XFS', reason)) return;
    const r = lowtide(['map', fs!.file('disk.img'), '--json']);
    expect(r.status).toBe(0);
    const doc = JSON.parse(r.stdout) as OffsetTable & { schemaVersion: number };
    expect(doc.schemaVersion).toBe(1);
    expect(doc.device).toBe(fs!.device);
    expect(doc.bytesOnDevice).toBe(DATA_BYTES);
    const img = out.file('cli.img');
    const i = lowtide(['image', '--read-from-device', '--json', fs!.file('disk.img'), img]);
    expect(i.status).toBe(0);
    const s = JSON.parse(i.stdout) as { readFrom: { bytesFromDevice: number } };
    expect(s.readFrom.bytesFromDevice).toBe(DATA_BYTES);
    expect(cmp(img, fs!.file('disk.img'))).toBe(true);
  });
});

describe('btrfs on a loop device: logical offsets, not device-mappable', () => {
  const reason = fsUnavailable('btrfs');
  let fs: LoopFs | undefined;
  const out = new TempDir();

  beforeAll(() => {
    if (reason) return;
    fs = new LoopFs('btrfs', 256);
    writeFixture(fs.file('disk.img'));
  });
  afterAll(() => {
    fs?.remove();
    out.remove();
  });

  it('says why, and reads through the file', async () => {
    if (skipReason('offset table on btrfs', reason)) return;
    const path = fs!.file('disk.img');
    const t = await mapFile(path);
    expect(t.fileSystem).toBe('btrfs');
    expect(t.deviceMappable).toBe(false);
    expect(t.reason).toMatch(/btrfs|anonymous device/);
    expect(t.runs.some((r) => r.kind === 'device')).toBe(false);
    const img = out.file('btrfs.img');
    const s = await imageSource({ source: path, output: img, readFrom: 'device' });
    expect(cmp(path, img)).toBe(true);
    expect(s.readFrom!.device).toBeNull();
    expect(s.readFrom!.bytesFromDevice).toBe(0);
    expect(s.readFrom!.bytesFromFile).toBe(SIZE);
    expect(s.readFrom!.reason).toBe(t.reason);
  });
});

describe('tmpfs: no FIEMAP', () => {
  const shm = '/dev/shm';
  const isTmpfs =
    existsSync(shm) &&
    spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', shm], { encoding: 'utf8' }).stdout?.trim() === 'tmpfs';
  const reason = isTmpfs ? undefined : '/dev/shm is not tmpfs here';
  const path = `${shm}/lowtide-offset-table-${process.pid}.img`;
  const out = new TempDir();
  afterAll(() => {
    spawnSync('rm', ['-f', path]);
    out.remove();
  });

  it('is not device-mappable, with the reason; reads go through the file', async () => {
    if (skipReason('offset table on tmpfs', reason)) return;
    writeFileSync(path, patternBytes(3 * MiB + 5, 4));
    const t = await mapFile(path);
    expect(t.fileSystem).toBe('tmpfs');
    expect(t.deviceMappable).toBe(false);
    expect(t.reason).toMatch(/FIEMAP|anonymous device/);
    expect(t.runs).toEqual([{ kind: 'file', offset: 0, length: 3 * MiB + 5, reason: t.reason, flags: [] }]);
    const img = out.file('tmpfs.img');
    const s = await imageSource({ source: path, output: img, readFrom: 'device' });
    expect(cmp(path, img)).toBe(true);
    expect(s.readFrom!.bytesFromFile).toBe(statSync(path).size);
  });

  it('a directory or a missing file is a clear error', async () => {
    await expect(mapFile(out.path)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(mapFile(out.file('missing'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
