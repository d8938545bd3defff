import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openVolume, readPartitions, type PartitionTable } from '../../lib/fs/index.js';
import { populate } from '../fixtures/fat/populate.js';
import {
  extract,
  fsck,
  haveTools,
  mkfs,
  Mtools,
  patch,
  readAt,
  sfdisk,
  sfdiskDump,
  Workdir,
} from '../fixtures/fat/tools.js';

const tools = haveTools('sfdisk', 'mkfs.fat', 'fsck.fat', 'mcopy', 'mdir');
if (!tools) console.warn('skipping partition tests: sfdisk, dosfstools or mtools are not installed');

const MiB = 1 << 20;
const partNo = (node: string): number => Number(/(\d+)$/.exec(node)![1]);

describe.skipIf(!tools)('MBR with primary, extended and logical partitions', () => {
  let work: Workdir;
  let image: string;
  beforeAll(() => {
    work = new Workdir();
    image = work.path('mbr.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 128 * MiB);
    sfdisk(
      image,
      [
        'label: dos',
        'start=2048, size=81920, type=c, bootable',
        'size=8192, type=83',
        'type=5',
        'size=16384, type=e',
        'size=8192, type=1',
        'size=4096, type=83',
        '',
      ].join('\n'),
    );
    const parts = sfdiskDump(image).partitions;
    const at = (n: number) => parts.find((p) => partNo(p.node) === n)!;
    mkfs(image, 0, {
      fat: 32,
      sectorsPerCluster: 1,
      offsetSectors: at(1).start,
      kib: at(1).size / 2,
      label: 'PRIMARY',
    });
    mkfs(image, 0, {
      fat: 16,
      sectorsPerCluster: 1,
      offsetSectors: at(5).start,
      kib: at(5).size / 2,
      label: 'LOGICAL5',
    });
    mkfs(image, 0, {
      fat: 12,
      sectorsPerCluster: 8,
      offsetSectors: at(6).start,
      kib: at(6).size / 2,
      label: 'LOGICAL6',
    });
    // Signatures only: XFS at partition 2, ext at partition 7.
    patch(image, at(2).start * 512, Buffer.from('XFSB'));
    patch(image, at(7).start * 512 + 0x438, [0x53, 0xef]);
  });
  afterAll(() => work?.cleanup());

  it('reports every partition like sfdisk --json, numbered as Linux does', async () => {
    const t = await readPartitions(image);
    const oracle = sfdiskDump(image);
    expect(oracle.label).toBe('dos');
    expect(t.kind).toBe('mbr');
    expect(t.warnings).toEqual([]);
    expect(t.partitions.map((p) => p.index)).toEqual(oracle.partitions.map((p) => partNo(p.node)));
    for (const o of oracle.partitions) {
      const p = t.partitions.find((q) => q.index === partNo(o.node))!;
      expect(p.start).toBe(o.start * 512);
      expect(p.size).toBe(o.size * 512);
      expect(Number.parseInt(p.type, 16)).toBe(Number.parseInt(o.type, 16));
      expect(p.logical).toBe(p.index >= 5);
    }
    const by = new Map(t.partitions.map((p) => [p.index, p]));
    expect(by.get(1)).toMatchObject({ fileSystem: 'fat32', bootable: true, typeName: 'W95 FAT32 (LBA)' });
    expect(by.get(2)).toMatchObject({ fileSystem: 'xfs', typeName: 'Linux' });
    expect(by.get(3)).toMatchObject({ extended: true, fileSystem: null });
    expect(by.get(5)).toMatchObject({ fileSystem: 'fat16', logical: true });
    expect(by.get(6)).toMatchObject({ fileSystem: 'fat12', type: '0x01' });
    expect(by.get(7)).toMatchObject({ fileSystem: 'ext' });
    expect(t.mbrSignature).toBe(Number.parseInt(oracle.id, 16));
    expect(oracle.partitions.filter((o) => o.bootable).map((o) => partNo(o.node))).toEqual([1]);
  });

  it('opens FAT volumes inside primary and logical partitions; mtools and fsck.fat agree', async () => {
    const t = await readPartitions(image);
    for (const n of [1, 5, 6]) {
      const p = t.partitions.find((q) => q.index === n)!;
      const mt = new Mtools(image, p.start);
      const vol = await openVolume(image, { partition: n });
      try {
        const clusterSize = vol.info().clusterSize;
        const expected = populate(mt, work.dir, { clusterSize, small: true, seed: n });
        // Re-open: the label and FSInfo are read at open time.
        vol.close();
        const v2 = await openVolume(image, { partition: n });
        expect(v2.partition?.index).toBe(n);
        expect(v2.info().partitionOffset).toBe(p.start);
        expect(v2.info().label).toBe(n === 1 ? 'PRIMARY' : `LOGICAL${n}`);
        const entries = await v2.files();
        expect(entries.map((e) => e.path).sort()).toEqual(mt.paths().sort());
        for (const [path, data] of expected.files) expect((await v2.readFile(path)).equals(data), path).toBe(true);
        const map = await v2.allocationMap();
        const volImage = work.path(`part${n}.img`);
        extract(image, p.start, p.size, volImage);
        const report = fsck(volImage);
        expect(report.clean).toBe(true);
        expect(map.usedClusters).toBe(report.usedClusters);
        for (const x of map.extents()) {
          expect(x.offset).toBeGreaterThanOrEqual(p.start);
          expect(x.offset + x.length).toBeLessThanOrEqual(p.start + p.size);
        }
        v2.close();
      } finally {
        vol.close();
      }
    }
  });

  it('refuses partitions that are not FAT volumes', async () => {
    await expect(openVolume(image, { partition: 3 })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/extended container/),
    });
    await expect(openVolume(image, { partition: 2 })).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    await expect(openVolume(image, { partition: 4 })).rejects.toThrow(
      /options\.partition: expected one of 1, 2, 3, 5, 6, 7, got 4/,
    );
    await expect(openVolume(image)).rejects.toThrow(/3 FAT partitions/);
  });

  it('detects a loop in the EBR chain', async () => {
    const copy = work.path('loop.img');
    fs.copyFileSync(image, copy);
    const t = await readPartitions(copy);
    const ext = t.partitions.find((p) => p.extended)!;
    const last = t.partitions.find((p) => p.index === 7)!;
    // The EBR of partition 7 sits before it; its link entry (the second one) points back to the first EBR.
    const ebrOffset = findEbrBefore(copy, last.start, ext.start);
    expect(ebrOffset).toBeGreaterThanOrEqual(0);
    const link = Buffer.alloc(16);
    link[4] = 0x05;
    link.writeUInt32LE(0, 8); // relative to the extended partition: the first EBR
    link.writeUInt32LE(2048, 12);
    patch(copy, ebrOffset + 0x1ce, link);
    await expect(readPartitions(copy)).rejects.toMatchObject({
      name: 'LowtideError',
      code: 'PARTITION_CORRUPT',
      message: expect.stringMatching(/EBR chain loops back/),
    });
  });

  it('treats partitions cut off by a truncated image as truncated, and their volumes as corrupt', async () => {
    const cut = work.path('cut.img');
    extract(image, 0, 100_000 * 512, cut);
    const t = await readPartitions(cut);
    const p5 = t.partitions.find((p) => p.index === 5)!;
    expect(p5.truncated).toBe(true);
    expect(t.warnings.some((w) => /partition 5 reaches past the end/.test(w))).toBe(true);
    await expect(openVolume(cut, { partition: 5 })).rejects.toMatchObject({
      code: 'FAT_CORRUPT',
      message: expect.stringMatching(/exceed the volume size/),
    });
  });
});

/** Scans backwards from a logical partition for the EBR that describes it. */
function findEbrBefore(image: string, partStart: number, extStart: number): number {
  for (let off = partStart - 512; off >= extStart; off -= 512) {
    const s = readAt(image, off, 512);
    if (s[510] === 0x55 && s[511] === 0xaa && s.readUInt32LE(0x1be + 8) * 512 + off === partStart) return off;
  }
  return -1;
}

describe.skipIf(!tools)('GPT', () => {
  let work: Workdir;
  let image: string;
  beforeAll(() => {
    work = new Workdir();
    image = work.path('gpt.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 64 * MiB);
    sfdisk(
      image,
      [
        'label: gpt',
        'size=16M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"',
        'size=20M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Données ✓"',
        'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="linux"',
        '',
      ].join('\n'),
    );
    const parts = sfdiskDump(image).partitions;
    mkfs(image, 0, {
      fat: 16,
      sectorsPerCluster: 4,
      offsetSectors: parts[0]!.start,
      kib: parts[0]!.size / 2,
      label: 'ESP',
    });
    mkfs(image, 0, {
      fat: 32,
      sectorsPerCluster: 1,
      offsetSectors: parts[1]!.start,
      kib: parts[1]!.size / 2,
      label: 'DATA',
    });
  });
  afterAll(() => work?.cleanup());

  const checkAgainstSfdisk = (t: PartitionTable, oracleImage: string): void => {
    const o = sfdiskDump(oracleImage);
    expect(t.kind).toBe('gpt');
    expect(t.diskGuid).toBe(o.id);
    expect(t.partitions).toHaveLength(o.partitions.length);
    for (const op of o.partitions) {
      const p = t.partitions.find((q) => q.index === partNo(op.node))!;
      expect(p).toMatchObject({
        start: op.start * 512,
        size: op.size * 512,
        type: op.type,
        uniqueGuid: op.uuid,
        name: op.name ?? '',
      });
    }
  };

  it('reads the primary header and entries like sfdisk', async () => {
    const t = await readPartitions(image);
    expect(t.gptBackupUsed).toBe(false);
    expect(t.warnings).toEqual([]);
    checkAgainstSfdisk(t, image);
    expect(t.partitions.map((p) => [p.index, p.fileSystem, p.typeName])).toEqual([
      [1, 'fat16', 'EFI System'],
      [2, 'fat32', 'Microsoft basic data'],
      [3, 'unknown', 'Linux filesystem'],
    ]);
    const v = await openVolume(image, { partition: 2 });
    expect(v.info()).toMatchObject({ type: 'fat32', label: 'DATA' });
    v.close();
  });

  for (const [what, offset] of [
    ['header', 512 + 0x30],
    ['entry array', 1024 + 40],
  ] as const) {
    it(`uses the backup header at the last LBA when the primary ${what} is damaged`, async () => {
      const copy = work.path(`damaged-${what}.img`);
      fs.copyFileSync(image, copy);
      patch(copy, offset, [0xde, 0xad]);
      const t = await readPartitions(copy);
      expect(t.gptBackupUsed).toBe(true);
      expect(t.warnings[0]).toMatch(/primary GPT header invalid .*CRC32 mismatch.*using the backup/);
      checkAgainstSfdisk(t, image);
      const v = await openVolume(copy, { partition: 1 });
      expect(v.info().label).toBe('ESP');
      v.close();
    });
  }

  it('fails with PARTITION_CORRUPT when both GPT headers are damaged behind a protective MBR', async () => {
    const copy = work.path('both.img');
    fs.copyFileSync(image, copy);
    patch(copy, 512 + 0x30, [1]);
    patch(copy, 64 * MiB - 512 + 0x30, [1]);
    await expect(readPartitions(copy)).rejects.toMatchObject({
      name: 'LowtideError',
      code: 'PARTITION_CORRUPT',
      offset: 512,
      message: expect.stringMatching(/protective MBR present but neither GPT header is valid/),
    });
  });

  it('warns when the backup header is missing (truncated disk)', async () => {
    const cut = work.path('cut.img');
    extract(image, 0, 48 * MiB, cut);
    const t = await readPartitions(cut);
    expect(t.gptBackupUsed).toBe(false);
    expect(t.warnings.some((w) => /backup GPT header invalid/.test(w))).toBe(true);
    expect(t.partitions.find((p) => p.index === 3)!.truncated).toBe(true);
  });
});

describe.skipIf(!tools)('disks without a table', () => {
  let work: Workdir;
  beforeAll(() => {
    work = new Workdir();
  });
  afterAll(() => work?.cleanup());

  it('recognises a FAT "superfloppy", also with the fake MBR entry mkfs.fat can write', async () => {
    for (const mbr of ['n', 'y']) {
      const image = work.path(`super-${mbr}.img`);
      mkfs(image, 32 * MiB, { fat: 16, label: 'FLOPPY', extra: [`--mbr=${mbr}`] });
      const t = await readPartitions(image);
      expect(t.kind).toBe('none');
      expect(t.partitions).toEqual([
        expect.objectContaining({ index: 0, start: 0, size: 32 * MiB, fileSystem: 'fat16' }),
      ]);
      const v = await openVolume(image);
      expect(v.info().label).toBe('FLOPPY');
      v.close();
    }
  });

  it('reports an empty or unknown disk without partitions', async () => {
    const image = work.path('zero.img');
    fs.writeFileSync(image, Buffer.alloc(4 * MiB));
    const t = await readPartitions(image);
    expect(t).toMatchObject({ kind: 'none', partitions: [] });
    await expect(openVolume(image)).rejects.toThrow(/no FAT partition/);
    await expect(openVolume(image, { offset: 0 })).rejects.toMatchObject({ code: 'FAT_CORRUPT' });
    const tiny = work.path('tiny.img');
    fs.writeFileSync(tiny, Buffer.alloc(100));
    expect((await readPartitions(tiny)).partitions).toEqual([]);
    await expect(readPartitions(work.path('missing'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
