import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openVolume, readPartitions, type FatVolume } from '../../lib/fs/index.js';
import { populate, type Populated } from '../fixtures/fat/populate.js';
import { fsck, haveTools, mkfs, Mtools, readAt, Workdir } from '../fixtures/fat/tools.js';

const tools = haveTools('mkfs.fat', 'fsck.fat', 'mcopy', 'mdir', 'mmd', 'mdel', 'mattrib', 'mdeltree');
if (!tools) console.warn('skipping FAT volume tests: dosfstools or mtools are not installed');

interface Config {
  name: string;
  bytes: number;
  fat: 12 | 16 | 32;
  spc: number;
  sectorSize?: number;
  small?: boolean;
}

const MiB = 1 << 20;
const configs: Config[] = [
  { name: 'FAT12 1.44 MB floppy', bytes: 1440 * 1024, fat: 12, spc: 1, small: true },
  { name: 'FAT12 4 KiB clusters', bytes: 12 * MiB, fat: 12, spc: 8 },
  { name: 'FAT16 512 B clusters', bytes: 16 * MiB, fat: 16, spc: 1 },
  { name: 'FAT16 2 KiB clusters', bytes: 64 * MiB, fat: 16, spc: 4 },
  { name: 'FAT16 32 KiB clusters', bytes: 256 * MiB, fat: 16, spc: 64 },
  { name: 'FAT32 512 B clusters', bytes: 64 * MiB, fat: 32, spc: 1 },
  { name: 'FAT32 4 KiB clusters', bytes: 512 * MiB, fat: 32, spc: 8 },
  { name: 'FAT32 32 KiB clusters', bytes: 2560 * MiB, fat: 32, spc: 64 },
  { name: 'FAT32 4096-byte sectors', bytes: 512 * MiB, fat: 32, spc: 1, sectorSize: 4096 },
];

describe.skipIf(!tools).each(configs)('$name', (cfg) => {
  let work: Workdir;
  let image: string;
  let expected: Populated;
  let mt: Mtools;
  let vol: FatVolume;
  const clusterSize = cfg.spc * (cfg.sectorSize ?? 512);

  beforeAll(async () => {
    work = new Workdir();
    image = work.path('vol.img');
    mkfs(image, cfg.bytes, { fat: cfg.fat, sectorsPerCluster: cfg.spc, sectorSize: cfg.sectorSize, label: 'LOWTIDE' });
    mt = new Mtools(image);
    expected = populate(mt, work.dir, { clusterSize, small: cfg.small, seed: cfg.bytes + cfg.spc });
    vol = await openVolume(image);
  });
  afterAll(() => {
    vol?.close();
    work?.cleanup();
  });

  it('reads the boot sector like fsck.fat', () => {
    const info = vol.info();
    expect(info.type).toBe(`fat${cfg.fat}`);
    expect(info.clusterSize).toBe(clusterSize);
    expect(info.bytesPerSector).toBe(cfg.sectorSize ?? 512);
    expect(info.label).toBe('LOWTIDE');
    expect(info.dirty).toBe(false);
    expect(info.partitionOffset).toBe(0);
    const report = fsck(image);
    expect(report.clean).toBe(true);
    expect(info.clusterCount).toBe(report.totalClusters);
    if (cfg.fat === 32) {
      expect(info.fsInfo?.valid).toBe(true);
      expect(info.rootCluster).toBe(2);
    } else {
      expect(info.fsInfo).toBeNull();
      expect(info.rootEntries).toBeGreaterThan(0);
    }
  });

  it('is seen as a disk without a partition table', async () => {
    const t = await readPartitions(image);
    expect(t.kind).toBe('none');
    expect(t.partitions).toHaveLength(1);
    expect(t.partitions[0]).toMatchObject({ index: 0, start: 0, size: cfg.bytes, fileSystem: `fat${cfg.fat}` });
  });

  it('lists the same paths as mdir, with directories marked', async () => {
    const entries = await vol.files();
    const ours = entries.map((e) => e.path).sort();
    expect(ours).toEqual(mt.paths().sort());
    expect(
      entries
        .filter((e) => e.isDirectory)
        .map((e) => e.path)
        .sort(),
    ).toEqual(mt.directories().sort());
    expect(new Set(ours)).toEqual(new Set([...expected.files.keys(), ...expected.dirs]));
    for (const d of expected.deleted) expect(ours).not.toContain(d);
  });

  it('reads every file byte-identical to what was written and to mcopy', async () => {
    const entries = await vol.files();
    for (const e of entries) {
      if (e.isDirectory) continue;
      const want = expected.files.get(e.path);
      expect(want, e.path).toBeDefined();
      expect(e.size, e.path).toBe(want!.length);
      const got = await vol.readFile(e.path);
      expect(got.equals(want!), e.path).toBe(true);
      expect(got.equals(mt.get(e.path)), e.path).toBe(true);
    }
  });

  it('gives file extents that hold the file bytes on the image', async () => {
    let fragmented = 0;
    for (const [p, data] of expected.files) {
      const ext = await vol.fileExtents(p);
      expect(ext.reduce((s, x) => s + x.length, 0)).toBe(data.length);
      if (ext.length > 1) fragmented++;
      const parts = ext.map((x) => readAt(image, x.offset, x.length));
      expect(Buffer.concat(parts).equals(data), p).toBe(true);
    }
    // The interleaved writes and deletes of the fixture leave at least one file in pieces.
    expect(fragmented).toBeGreaterThan(0);
  });

  it('gives every entry its extents in one walk, the same as fileExtents() and holding the file bytes', async () => {
    const walked = await vol.filesWithExtents();
    expect(walked.map((w) => w.entry.path)).toEqual((await vol.files()).map((e) => e.path));
    let files = 0;
    for (const { entry, extents } of walked) {
      if (entry.isDirectory) {
        expect(extents, entry.path).toEqual([]);
        continue;
      }
      files++;
      expect(extents, entry.path).toEqual(await vol.fileExtents(entry.path));
      const data = Buffer.concat(extents.map((x) => readAt(image, x.offset, x.length)));
      expect(data.equals(expected.files.get(entry.path)!), entry.path).toBe(true);
    }
    expect(files).toBe(expected.files.size);
  });

  it('gives the backup catalog lines (native) as the JSON of the walk, in frames, with exclusions, in any time zone', async () => {
    const walked = await vol.filesWithExtents();
    const dir = walked.find((w) => w.entry.isDirectory)?.entry.path;
    const excluded = dir === undefined ? [] : [dir, walked.find((w) => !w.entry.isDirectory)!.entry.path];
    const gone = (path: string): boolean => {
      for (let at = path; at !== ''; at = at.slice(0, at.lastIndexOf('/'))) if (excluded.includes(at)) return true;
      return false;
    };
    const savedTz = process.env.TZ;
    try {
      for (const tz of ['UTC', 'America/New_York', 'Asia/Kolkata']) {
        process.env.TZ = tz;
        // The oracle: JSON.stringify of a CatalogEntry, as JS builds it from a
        // walk (whose Dates read FAT times as local time in this time zone).
        const want = (await vol.filesWithExtents())
          .filter((w) => !gone(w.entry.path))
          .map(({ entry: e, extents }) =>
            JSON.stringify({
              partition: 3,
              path: e.path,
              shortName: e.shortName,
              size: e.isDirectory ? 0 : e.size,
              isDirectory: e.isDirectory,
              attributes: e.attributes,
              modified: e.modified.toISOString(),
              extents: extents.map((x) => [x.offset, x.length]),
            }),
          );
        const frames = await vol.catalogFrames(3, excluded, 512);
        expect(frames.length).toBeGreaterThan(1);
        for (const f of frames.slice(0, -1)) expect(f.text.length).toBeGreaterThanOrEqual(512);
        for (const f of frames) expect(f.text.toString('utf8').endsWith('\n')).toBe(true);
        const lines = frames.flatMap((f) => f.text.toString('utf8').split('\n').slice(0, -1));
        expect(frames.reduce((n, f) => n + f.entries, 0)).toBe(lines.length);
        expect(lines, tz).toEqual(want);
      }
    } finally {
      if (savedTz === undefined) delete process.env.TZ;
      else process.env.TZ = savedTz;
    }
  });

  it('counts used clusters like fsck.fat -v, and every used cluster belongs to a file', async () => {
    const map = await vol.allocationMap();
    const report = fsck(image);
    expect(map.clusterCount).toBe(report.totalClusters);
    expect(map.usedClusters).toBe(report.usedClusters);
    expect(map.badClusters).toBe(0);
    expect(map.usedClusters + map.freeClusters).toBe(map.clusterCount);
    const { stats } = await vol.scan();
    expect(stats.clustersOwned).toBe(map.usedClusters);
    expect(stats.orphanLongNames).toBe(0);
    expect(stats.deletedEntries).toBeGreaterThan(0);
    const extents = map.extents();
    expect(extents.reduce((s, x) => s + x.length, 0)).toBe(map.usedClusters * clusterSize);
    for (const x of extents) {
      expect(x.offset).toBeGreaterThanOrEqual(vol.info().dataOffset);
      expect(x.offset + x.length).toBeLessThanOrEqual(cfg.bytes);
    }
    // Every cluster of every file is marked in the map.
    for (const p of expected.files.keys()) {
      const e = await vol.stat(p);
      if (e.firstCluster === 0) continue;
      for (const r of await vol.chain(e.firstCluster)) {
        for (let c = r.cluster; c < r.cluster + r.count; c++) expect(map.isAllocated(c)).toBe(true);
      }
    }
    if (cfg.fat === 32) expect(vol.info().fsInfo?.freeCount).toBe(map.freeClusters);
  });

  it('decodes names, attributes and times', async () => {
    const entries = await vol.files();
    const by = new Map(entries.map((e) => [e.path, e]));
    const e5 = by.get('/ÕFILE.TXT')!;
    expect(e5.shortName).toBe('ÕFILE.TXT');
    expect(e5.lfnSlots).toBe(0);
    expect(readAt(image, e5.entryOffset, 1)[0]).toBe(0x05);
    const lower = by.get('/õ lower-case long name.txt')!;
    expect(lower.shortName.startsWith('Õ')).toBe(true);
    expect(lower.lfnSlots).toBeGreaterThan(0);
    expect(by.get('/README.TXT')!.readOnly).toBe(true);
    const hidden = by.get('/hidden.sys')!;
    expect(hidden.hidden && hidden.system).toBe(true);
    expect(by.get('/empty.dat')!).toMatchObject({ size: 0, firstCluster: 0, name: 'empty.dat' });
    expect(by.get('/Docs')!.isDirectory).toBe(true);
    const now = Date.now();
    for (const e of entries) {
      expect(Math.abs(e.modified.getTime() - now)).toBeLessThan(3_600_000);
    }
  });

  it('lists one directory and resolves names case-insensitively (long and 8.3)', async () => {
    const root = await vol.list('/');
    expect(root.map((e) => e.name)).toContain('Docs');
    const many = await vol.list('/MANY');
    expect(many).toHaveLength(cfg.small ? 24 : 60);
    const byShort = await vol.stat(`/docs/${(await vol.stat('/Docs/a')).shortName}`);
    expect(byShort.path).toBe('/Docs/a');
    await expect(vol.stat('/nope.txt')).rejects.toMatchObject({ name: 'LowtideError', code: 'NOT_FOUND' });
    await expect(vol.readFile('/Docs')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe.skipIf(!tools)('volume API boundaries', () => {
  let work: Workdir;
  let image: string;
  beforeAll(() => {
    work = new Workdir();
    image = work.path('v.img');
    mkfs(image, 16 * MiB, { fat: 16, sectorsPerCluster: 1, label: 'EDGE' });
  });
  afterAll(() => work?.cleanup());

  it('validates options with messages that name them', async () => {
    await expect(openVolume(image, { partition: -1 })).rejects.toThrow(
      /options\.partition: expected an integer from 0/,
    );
    await expect(openVolume(image, { partition: 3 })).rejects.toThrow(/options\.partition: expected one of 0, got 3/);
    await expect(openVolume(image, { partition: 0, offset: 0 })).rejects.toThrow(/either partition or offset/);
    await expect(openVolume('', {})).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(openVolume(work.path('missing.img'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('opens by offset and reports a closed volume', async () => {
    const v = await openVolume(image, { offset: 0, size: 16 * MiB });
    expect(v.partition).toBeNull();
    expect(v.info().type).toBe('fat16');
    v.close();
    await expect(v.files()).rejects.toMatchObject({ code: 'CLOSED' });
    expect(fs.existsSync(image)).toBe(true);
  });

  it('never writes to the source', async () => {
    const before = fs.readFileSync(image);
    const v = await openVolume(image);
    await v.files();
    await v.allocationMap();
    v.close();
    expect(fs.readFileSync(image).equals(before)).toBe(true);
  });
});
