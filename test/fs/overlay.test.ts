/**
 * Exclusions applied as deletions on a copy-on-write overlay, checked with
 * real tools: the volume rebuilt from the source + the overlay writes (with
 * the freed clusters zeroed, as they are never read) must pass `fsck.fat -n`
 * exactly like the source does, read back through mtools with every kept file
 * byte-identical and every excluded one gone, and count the freed clusters.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LowtideError } from '../../lib/errors.js';
import { openVolume, type DirEntry, type ExclusionPlan, type FatVolume } from '../../lib/fs/index.js';
import { native } from '../../lib/native.js';
import { chainOf, layout, setFatEntry, type Layout } from '../fixtures/fat/corrupt.js';
import { mcopyExists, mcopyTree, mdirListing, openModes, reconstruct, sha256File } from '../fixtures/fat/overlay.js';
import { populate, type Populated } from '../fixtures/fat/populate.js';
import {
  extract,
  fsck,
  haveTools,
  mkfs,
  Mtools,
  patch,
  pseudoRandom,
  readAt,
  sfdisk,
  sfdiskDump,
  Workdir,
  type FsckReport,
} from '../fixtures/fat/tools.js';

const tools = haveTools('mkfs.fat', 'fsck.fat', 'mcopy', 'mdir', 'mmd', 'mdel', 'mattrib', 'mdeltree', 'sfdisk');
if (!tools) console.warn('skipping overlay tests: dosfstools, mtools or sfdisk are not installed');

const MiB = 1 << 20;

interface Config {
  name: string;
  fat: 12 | 16 | 32;
  spc: number;
  /** Bytes of the volume. */
  bytes: number;
  small?: boolean;
  /** Put the volume in a partition of this kind of table. */
  table?: 'mbr' | 'gpt';
}

const configs: Config[] = [
  { name: 'FAT12 1.44 MB floppy', fat: 12, spc: 1, bytes: 1440 * 1024, small: true },
  { name: 'FAT16 512 B clusters', fat: 16, spc: 1, bytes: 16 * MiB },
  { name: 'FAT16 2 KiB clusters in a GPT partition', fat: 16, spc: 4, bytes: 24 * MiB, table: 'gpt' },
  { name: 'FAT32 512 B clusters', fat: 32, spc: 1, bytes: 40 * MiB },
  { name: 'FAT32 1 KiB clusters in an MBR partition', fat: 32, spc: 2, bytes: 72 * MiB, table: 'mbr' },
];

interface ExclusionSet {
  name: string;
  patterns: string[];
  /** The paths the patterns select at the top (the subtrees of directories follow). */
  selects: (path: string, isDirectory: boolean) => boolean;
}

const tmpFiles = ['/junk.tmp', '/Docs/a/b/c/cache.TMP', '/many/scratch.Tmp', '/frag/x y.tmp'];
const sets: ExclusionSet[] = [
  { name: 'a single file', patterns: ['/exact.bin'], selects: (p) => p === '/exact.bin' },
  { name: 'a file with a long Unicode name', patterns: ['日本語*'], selects: (p) => p === '/日本語のファイル名.txt' },
  { name: 'a deep directory subtree', patterns: ['/docs/A/b'], selects: (p) => p === '/Docs/a/b' },
  { name: '**/*.tmp', patterns: ['**/*.tmp'], selects: (p, dir) => !dir && /\.tmp$/i.test(p) },
  { name: 'a name whose first byte is 0xE5', patterns: ['/õfile.txt'], selects: (p) => p === '/ÕFILE.TXT' },
  {
    name: 'empty files',
    patterns: ['/empty.dat', '/Docs/a/empty'],
    selects: (p) => p === '/empty.dat' || p === '/Docs/a/empty',
  },
  { name: 'a fragmented file', patterns: ['/frag/big.bin'], selects: (p) => p === '/frag/big.bin' },
  {
    name: 'everything in a directory but not the directory',
    patterns: ['/many/*'],
    selects: (p) => p.startsWith('/many/'),
  },
  {
    name: 'all of these at once',
    patterns: [
      '/exact.bin',
      '日本語*',
      '/docs/A/b',
      '**/*.tmp',
      '/õfile.txt',
      '/empty.dat',
      '/Docs/a/empty',
      '/frag/big.bin',
      '/many/*',
    ],
    selects: (p, dir) =>
      [
        '/exact.bin',
        '/日本語のファイル名.txt',
        '/Docs/a/b',
        '/ÕFILE.TXT',
        '/empty.dat',
        '/Docs/a/empty',
        '/frag/big.bin',
      ].includes(p) ||
      (!dir && /\.tmp$/i.test(p)) ||
      p.startsWith('/many/'),
  },
];

/** fsck output without its last line (the file name and the counts). */
const fsckBody = (r: FsckReport): string[] => r.output.trim().split('\n').slice(0, -1);

function underAny(p: string, tops: readonly string[]): boolean {
  return tops.some((t) => p === t || p.startsWith(`${t}/`));
}

describe.skipIf(!tools).each(configs)('$name', (cfg) => {
  let work: Workdir;
  let image: string;
  let offset = 0;
  let partition: number | undefined;
  let l: Layout;
  let expected: Populated;
  let srcHash: string;
  let srcFsck: FsckReport;
  let srcPaths: string[];
  let srcDirs: Set<string>;
  let srcEntries: Map<string, DirEntry>;
  let srcTree: Map<string, Buffer>;
  let srcListing: ReturnType<typeof mdirListing>;
  let vol: FatVolume;
  let n = 0;
  const clusterSize = cfg.spc * 512;

  /** A whole-volume image of `img` (for fsck.fat, which takes no offset). */
  const volumeImage = (img: string): string => {
    if (offset === 0) return img;
    const out = `${img}.vol`;
    extract(img, offset, cfg.bytes, out);
    return out;
  };

  beforeAll(async () => {
    work = new Workdir('lowtide-overlay-');
    image = work.path('disk.img');
    if (cfg.table) {
      fs.writeFileSync(image, '');
      fs.truncateSync(image, cfg.bytes + 4 * MiB);
      const type = cfg.table === 'gpt' ? 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7' : 'c';
      sfdisk(
        image,
        [`label: ${cfg.table === 'gpt' ? 'gpt' : 'dos'}`, `start=2048, size=${cfg.bytes / 512}, type=${type}`, ''].join(
          '\n',
        ),
      );
      const p = sfdiskDump(image).partitions[0]!;
      offset = p.start * 512;
      partition = 1;
      mkfs(image, 0, {
        fat: cfg.fat,
        sectorsPerCluster: cfg.spc,
        offsetSectors: p.start,
        kib: p.size / 2,
        label: 'OVERLAY',
      });
    } else {
      mkfs(image, cfg.bytes, { fat: cfg.fat, sectorsPerCluster: cfg.spc, label: 'OVERLAY' });
    }
    const mt = new Mtools(image, offset);
    expected = populate(mt, work.dir, { clusterSize, small: cfg.small, seed: cfg.bytes + cfg.spc });
    for (const [i, p] of tmpFiles.entries()) {
      const data = pseudoRandom(100 + i * clusterSize, 7 + i);
      mt.put(p, data, work.dir);
      expected.files.set(p, data);
    }
    mt.put('/keep.tmp.txt', 'not a .tmp file', work.dir);
    expected.files.set('/keep.tmp.txt', Buffer.from('not a .tmp file'));
    l = layout(image, offset);
    srcHash = sha256File(image);
    srcFsck = fsck(volumeImage(image));
    srcPaths = mt.paths();
    srcDirs = new Set(mt.directories());
    srcTree = mcopyTree(mt.spec, work.path('src-tree'));
    srcListing = mdirListing(mt.spec);
    vol = await openVolume(image, partition === undefined ? {} : { partition });
    srcEntries = new Map((await vol.files()).map((e) => [e.path, e]));
  });
  afterAll(() => {
    vol?.close();
    work?.cleanup();
  });

  it('starts from a clean, fully populated volume', () => {
    expect(srcFsck.clean).toBe(true);
    expect(new Set(srcPaths)).toEqual(new Set([...expected.files.keys(), ...expected.dirs]));
    expect(srcTree).toEqual(expected.files);
  });

  it.each(sets)('excluding $name leaves a clean volume without them', async (set) => {
    const plan = await vol.planExclusions(set.patterns);
    const tops = srcPaths.filter(
      (p) =>
        set.selects(p, srcDirs.has(p)) &&
        !underAny(
          p,
          srcPaths.filter((q) => q !== p && set.selects(q, srcDirs.has(q))),
        ),
    );
    const gone = srcPaths.filter((p) => underAny(p, tops));
    expect(tops.length).toBeGreaterThan(0);
    expect(plan.unmatched).toEqual([]);
    expect(plan.excluded.map((e) => e.path).sort()).toEqual([...gone].sort());
    for (const e of plan.excluded) {
      expect(e.isDirectory, e.path).toBe(srcDirs.has(e.path));
      expect(e.size, e.path).toBe(e.isDirectory ? 0 : expected.files.get(e.path)!.length);
    }
    const goneFiles = gone.filter((p) => !srcDirs.has(p));
    expect(plan.bytesExcluded).toBe(goneFiles.reduce((s, p) => s + expected.files.get(p)!.length, 0));

    // The freed clusters are exactly the chains of everything excluded (read from the FAT by the test).
    let clusters = 0;
    for (const p of gone) {
      const first = srcEntries.get(p)!.firstCluster;
      if (first !== 0) clusters += chainOf(image, l, first).length;
    }
    expect(plan.freedClusters).toBe(clusters);
    expect(plan.freedBytes).toBe(clusters * clusterSize);
    expect(plan.freedRuns.reduce((s, r) => s + r.length, 0)).toBe(plan.freedBytes);
    checkWrites(plan, l);

    const rec = work.path(`rec${n++}.img`);
    reconstruct(image, plan, rec);
    const report = fsck(volumeImage(rec));
    expect(report.clean, report.output).toBe(true);
    expect(fsckBody(report)).toEqual(fsckBody(srcFsck));
    expect(report.usedClusters).toBe(srcFsck.usedClusters - plan.freedClusters);
    expect(report.files).toBe(srcFsck.files - gone.length);
    expect(plan.allocationMap.usedClusters).toBe(report.usedClusters);
    expect(plan.allocationMap.freeClusters).toBe(report.totalClusters - report.usedClusters);
    if (cfg.fat === 32) {
      const fsinfo = vol.info().fsInfo!;
      const stored = readAt(rec, fsinfo.offset + 488, 4).readUInt32LE(0);
      expect(stored).toBe(report.totalClusters - report.usedClusters);
      expect(plan.fsinfo).toBe(plan.freedClusters > 0 ? 'updated' : 'none');
    } else {
      expect(plan.fsinfo).toBe('none');
    }

    // mtools: same paths minus the excluded, every kept file byte-identical, excluded ones unreadable.
    const mt = new Mtools(rec, offset);
    expect(mt.paths().sort()).toEqual(srcPaths.filter((p) => !gone.includes(p)).sort());
    const tree = mcopyTree(mt.spec, work.path('rec-tree'));
    const keptFiles = new Map([...srcTree].filter(([p]) => !gone.includes(p)));
    expect([...tree.keys()].sort()).toEqual([...keptFiles.keys()].sort());
    for (const [p, data] of keptFiles) expect(tree.get(p)!.equals(data), p).toBe(true);
    for (const p of tops) if (!srcDirs.has(p)) expect(mcopyExists(mt.spec, p), p).toBe(false);

    // mdir -/ -a: the source's listing minus the excluded entries, in the same order.
    const listing = mdirListing(mt.spec);
    expect([...listing.blocks.keys()].sort()).toEqual(
      [...srcListing.blocks.keys()].filter((d) => !underAny(d, tops)).sort(),
    );
    for (const [dir, block] of listing.blocks) {
      const src = srcListing.blocks.get(dir)!;
      const removed = tops.filter((t) => (t.lastIndexOf('/') === 0 ? '/' : t.slice(0, t.lastIndexOf('/'))) === dir);
      expect(block.lines.length, dir).toBe(src.lines.length - removed.length);
      let i = 0;
      for (const line of src.lines) if (i < block.lines.length && block.lines[i] === line) i++;
      expect(i, `${dir}: kept lines in source order`).toBe(block.lines.length);
      const removedBytes = removed
        .filter((t) => !srcDirs.has(t))
        .reduce((s, t) => s + expected.files.get(t)!.length, 0);
      expect(block.files, dir).toBe(src.files - removed.length);
      expect(block.bytes, dir).toBe(src.bytes - removedBytes);
    }
    expect(listing.bytesFree).toBe(srcListing.bytesFree + plan.freedBytes);

    // Our own parser agrees on the reconstructed volume.
    const after = await openVolume(rec, partition === undefined ? {} : { partition });
    try {
      expect((await after.files()).map((e) => e.path).sort()).toEqual(srcPaths.filter((p) => !gone.includes(p)).sort());
      expect((await after.allocationMap()).usedClusters).toBe(report.usedClusters);
    } finally {
      after.close();
    }
    fs.rmSync(rec, { force: true });
    fs.rmSync(`${rec}.vol`, { force: true });
  });

  it('marks long-name slots that straddle a cluster boundary', async () => {
    const cs = l.clusterSize;
    const cluster = (off: number): number => Math.floor((off - l.dataOffset) / cs);
    const straddling = [...srcEntries.values()].find(
      (e) => e.lfnSlots > 0 && e.lfnOffset >= l.dataOffset && cluster(e.lfnOffset) !== cluster(e.entryOffset),
    );
    if (cs > 1024) return; // larger clusters rarely split a name in these fixtures
    expect(straddling, 'a long name split across clusters').toBeDefined();
    const plan = await vol.planExclusions([straddling!.path]);
    const marked = plan.writes.filter((w) => w.offset >= l.dataOffset);
    expect(marked.length).toBe(2); // one sector in each cluster
    const rec = work.path(`rec${n++}.img`);
    reconstruct(image, plan, rec);
    const report = fsck(volumeImage(rec));
    expect(report.clean, report.output).toBe(true);
    expect(fsckBody(report)).toEqual(fsckBody(srcFsck));
    expect(new Mtools(rec, offset).paths().sort()).toEqual(srcPaths.filter((p) => p !== straddling!.path).sort());
  });

  it('never wrote the source, and keeps it open read-only', async () => {
    expect(openModes(image).length).toBeGreaterThan(0);
    expect(openModes(image).every((m) => m === 0)).toBe(true);
    expect(sha256File(image)).toBe(srcHash);
  });
});

/** The writes are sorted, non-overlapping whole sectors in live metadata, never in a freed cluster. */
function checkWrites(plan: ExclusionPlan, l: Layout): void {
  let prevEnd = -1;
  for (const w of plan.writes) {
    expect(w.data.length).toBe(plan.sectorSize);
    expect(w.offset).toBeGreaterThanOrEqual(prevEnd);
    expect(Math.abs((w.offset - l.fatOffset) % plan.sectorSize)).toBe(0);
    prevEnd = w.offset + w.data.length;
    for (const r of plan.freedRuns)
      expect(w.offset + w.data.length <= r.offset || w.offset >= r.offset + r.length).toBe(true);
    if (w.offset >= l.dataOffset) {
      const c = Math.floor((w.offset - l.dataOffset) / l.clusterSize) + 2;
      expect(plan.allocationMap.isAllocated(c)).toBe(true);
    }
  }
}

describe.skipIf(!tools)('overlay edge cases', () => {
  let work: Workdir;
  let n = 0;
  beforeAll(() => {
    work = new Workdir('lowtide-overlay-edge-');
  });
  afterAll(() => work?.cleanup());

  const build = (fat: 12 | 16 | 32, bytes: number, spc = 1): { image: string; mt: Mtools; l: Layout } => {
    const image = work.path(`e${n++}.img`);
    mkfs(image, bytes, { fat, sectorsPerCluster: spc, label: 'EDGE' });
    const mt = new Mtools(image);
    mt.put('/A.BIN', pseudoRandom(512 * spc * 5, 1), work.dir);
    mt.put('/B.BIN', pseudoRandom(512 * spc * 3, 2), work.dir);
    mt.put('/C.BIN', pseudoRandom(512 * spc * 2, 3), work.dir);
    mt.mkdir('/dir');
    mt.put('/dir/inside.txt', pseudoRandom(700, 4), work.dir);
    return { image, mt, l: layout(image) };
  };

  async function planOn(image: string, patterns: string[]): Promise<ExclusionPlan> {
    const v = await openVolume(image);
    try {
      return await v.planExclusions(patterns);
    } finally {
      v.close();
    }
  }

  async function rejection(p: Promise<unknown>): Promise<LowtideError> {
    let caught: unknown;
    try {
      await p;
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(LowtideError);
    return caught as LowtideError;
  }

  it.each([12, 16, 32] as const)(
    'FAT%i: a cross-linked file is FAT_CORRUPT naming both paths and the cluster; the source is untouched',
    async (fat) => {
      const { image, l } = build(fat, fat === 32 ? 40 * MiB : fat === 16 ? 16 * MiB : 4 * MiB, fat === 12 ? 4 : 1);
      const v0 = await openVolume(image);
      const a = await v0.stat('/A.BIN');
      const b = await v0.stat('/B.BIN');
      v0.close();
      const ac = chainOf(image, l, a.firstCluster);
      const bc = chainOf(image, l, b.firstCluster);
      // B's last cluster now links into A's chain: A's clusters from ac[2] on are in both.
      setFatEntry(image, l, bc[bc.length - 1]!, ac[2]!);
      const hash = sha256File(image);
      const linkOffset = l.fatOffset + Math.floor((bc[bc.length - 1]! * fat) / 8);
      for (const [pattern, gone, kept] of [
        ['/B.BIN', '/B.BIN', '/A.BIN'],
        ['/A.BIN', '/A.BIN', '/B.BIN'],
      ] as const) {
        const v = await openVolume(image);
        try {
          const pending = v.planExclusions([pattern]);
          expect(openModes(image).every((m) => m === 0)).toBe(true);
          const e = await rejection(pending);
          expect(e.code, e.message).toBe('FAT_CORRUPT');
          expect(e.message).toContain(`cluster ${ac[2]} `);
          expect(e.message).toContain('/A.BIN');
          expect(e.message).toContain('/B.BIN');
          expect(e.message).toContain(`excluding ${gone} would free a cluster that the kept ${kept} still uses`);
          expect(e.message).toContain(`byte offset ${linkOffset}`);
          expect(e.offset).toBe(linkOffset);
        } finally {
          v.close();
        }
      }
      // A cross-link elsewhere also makes the plan unsafe to trust: still an error, never a silent plan.
      const e = await rejection(planOn(image, ['/C.BIN']));
      expect(e.code).toBe('FAT_CORRUPT');
      expect(e.message).toMatch(/cross-link/);
      expect(sha256File(image)).toBe(hash);
    },
  );

  it('chain damage inside an excluded chain is FAT_CORRUPT with the FAT entry offset', async () => {
    const { image, l } = build(16, 16 * MiB);
    const v0 = await openVolume(image);
    const a = await v0.stat('/A.BIN');
    v0.close();
    const ac = chainOf(image, l, a.firstCluster);
    for (const [value, re] of [
      [ac[1]!, /loops back/],
      [l.clusterCount + 9, /past the last cluster/],
      [0, /marked free inside the chain/],
    ] as const) {
      const img = work.path(`d${n++}.img`);
      fs.copyFileSync(image, img);
      setFatEntry(img, l, ac[3]!, value);
      const e = await rejection(planOn(img, ['/A.BIN']));
      expect(e.code).toBe('FAT_CORRUPT');
      expect(e.message).toMatch(re);
      expect(e.offset).toBe(l.fatOffset + ac[3]! * 2);
    }
  });

  it('rejects the root directory, missing paths and bad patterns with clear messages', async () => {
    const { image } = build(16, 16 * MiB);
    const v = await openVolume(image);
    try {
      await expect(v.planExclusions([''])).rejects.toThrow(/exclude pattern "": empty pattern/);
      await expect(v.planExclusions(['/'])).rejects.toThrow(/names only the root directory, which cannot be excluded/);
      await expect(v.planExclusions(['//'])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(v.planExclusions(['/a/../b'])).rejects.toThrow(/'\.\.' is not allowed/);
      await expect(v.planExclusions(['2:/A.BIN'])).rejects.toThrow(
        /is for partition 2, but this volume is partition 0/,
      );
      await expect(v.planExclusions('x' as unknown as string[])).rejects.toThrow(
        /patterns: expected an array of glob strings/,
      );
      await expect(v.planExclusions([3 as unknown as string])).rejects.toThrow(
        /patterns\[0\]: expected a glob string, got 3/,
      );
      const none = await v.planExclusions(['/nothing*']);
      expect(none).toMatchObject({
        unmatched: ['/nothing*'],
        writes: [],
        freedClusters: 0,
        excluded: [],
        fsinfo: 'none',
      });
      const withPrefix = await v.planExclusions(['0:/C.BIN']);
      expect(withPrefix.excluded.map((e) => e.path)).toEqual(['/C.BIN']);
    } finally {
      v.close();
    }
  });

  it('native planDeletion resolves paths like stat (any case, 8.3 names), nested paths, and rejects the root', async () => {
    const { image, mt } = build(16, 16 * MiB);
    mt.put('/dir/A Long Name.txt', 'x', work.dir);
    const h = await native.openVolume(image, 0, 0);
    try {
      const exact = await h.planDeletion(['/dir/A Long Name.txt']);
      const short = await h.planDeletion(['//DIR/a long name.TXT']);
      const sn = (await h.stat('/dir/A Long Name.txt')).shortName;
      const byShort = await h.planDeletion([`/dir/${sn.toLowerCase()}`]);
      for (const p of [short, byShort]) {
        expect(p.excluded).toEqual(exact.excluded);
        expect(Buffer.compare(p.writeData, exact.writeData)).toBe(0);
        expect([...p.writeOffsets]).toEqual([...exact.writeOffsets]);
      }
      expect(exact.excluded).toEqual([{ path: '/dir/A Long Name.txt', size: 1, isDirectory: false, top: true }]);
      expect(exact.entriesMarked).toBe(3); // 15 characters: two long-name slots, and the 8.3 entry
      const nested = await h.planDeletion(['/dir', '/dir/inside.txt', '/DIR/INSIDE.TXT']);
      expect(nested.excluded.map((e) => [e.path, e.top])).toEqual([
        ['/dir', true],
        ['/dir/inside.txt', false],
        ['/dir/A Long Name.txt', false],
      ]);
      expect(nested.entriesMarked).toBe(1);
      for (const root of ['/', '', '//', '/./']) {
        await expect(h.planDeletion([root])).rejects.toMatchObject({
          code: 'INVALID_ARGUMENT',
          message: expect.stringMatching(/root directory cannot be excluded/),
        });
      }
      await expect(h.planDeletion(['/nope'])).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await expect(h.planDeletion(['/a/../b'])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      // Argument errors are thrown synchronously, like the other handle methods.
      expect(() => h.planDeletion('x' as unknown as string[])).toThrow(/paths must be an array of strings/);
      expect(() => h.planDeletion([1 as unknown as string])).toThrow(/paths\[0\] must be a string/);
    } finally {
      h.close();
    }
  });

  it('FSInfo: updated when right, recomputed when wrong or unknown, hint lowered to the first freed cluster', async () => {
    const { image, l } = build(32, 40 * MiB);
    const v0 = await openVolume(image);
    const fsinfo = v0.info().fsInfo!;
    const b = await v0.stat('/B.BIN');
    v0.close();
    const firstFreed = Math.min(...chainOf(image, l, b.firstCluster));
    const cases: { name: string; count: number | null; hint: number | null; want: ExclusionPlan['fsinfo'] }[] = [
      { name: 'right', count: null, hint: l.clusterCount + 1, want: 'updated' },
      { name: 'wrong', count: 12345, hint: null, want: 'recomputed' },
      { name: 'unknown', count: 0xffffffff, hint: 0xffffffff, want: 'recomputed' },
    ];
    for (const c of cases) {
      const img = work.path(`f${n++}.img`);
      fs.copyFileSync(image, img);
      if (c.count !== null) patch(img, fsinfo.offset + 488, Buffer.from(new Uint32Array([c.count]).buffer));
      if (c.hint !== null) patch(img, fsinfo.offset + 492, Buffer.from(new Uint32Array([c.hint]).buffer));
      const plan = await planOn(img, ['/B.BIN']);
      expect(plan.fsinfo, c.name).toBe(c.want);
      const rec = `${img}.rec`;
      reconstruct(img, plan, rec);
      const report = fsck(rec);
      expect(report.clean, `${c.name}: ${report.output}`).toBe(true);
      expect(readAt(rec, fsinfo.offset + 488, 4).readUInt32LE(0)).toBe(report.totalClusters - report.usedClusters);
      const hint = readAt(rec, fsinfo.offset + 492, 4).readUInt32LE(0);
      if (c.hint === 0xffffffff) expect(hint).toBe(0xffffffff);
      else if (c.hint !== null) expect(hint).toBe(firstFreed);
    }
  });

  it('FAT32 with mirroring off frees the chain in the active FAT only', async () => {
    const { image, l, mt } = build(32, 40 * MiB);
    // BPB_ExtFlags: mirroring off (bit 7), active FAT 1.
    patch(image, 0x28, [0x81, 0x00]);
    const v0 = await openVolume(image);
    expect(v0.info()).toMatchObject({ mirroring: false, activeFat: 1 });
    const a = await v0.stat('/A.BIN');
    v0.close();
    const ac = chainOf(image, l, a.firstCluster);
    const plan = await planOn(image, ['/A.BIN']);
    expect(plan.fatCopies).toEqual([1]);
    const fat0 = plan.writes.filter((w) => w.offset >= l.fatOffset && w.offset < l.fatOffset + l.fatBytes);
    const fat1 = plan.writes.filter(
      (w) => w.offset >= l.fatOffset + l.fatBytes && w.offset < l.fatOffset + 2 * l.fatBytes,
    );
    expect(fat0).toEqual([]);
    expect(fat1.length).toBeGreaterThan(0);
    const rec = work.path(`m${n++}.img`);
    reconstruct(image, plan, rec);
    for (const c of ac) {
      expect(readAt(rec, l.fatOffset + l.fatBytes + c * 4, 4).readUInt32LE(0) & 0x0fffffff).toBe(0);
      expect(readAt(rec, l.fatOffset + c * 4, 4).readUInt32LE(0)).toBe(
        readAt(image, l.fatOffset + c * 4, 4).readUInt32LE(0),
      );
    }
    const v = await openVolume(rec);
    try {
      expect((await v.files()).map((e) => e.path).sort()).toEqual(['/B.BIN', '/C.BIN', '/dir', '/dir/inside.txt']);
      expect((await v.allocationMap()).usedClusters).toBe(plan.allocationMap.usedClusters);
    } finally {
      v.close();
    }
    expect(new Mtools(rec).get('/B.BIN').equals(mt.get('/B.BIN'))).toBe(true);
  });

  it.each([12, 16, 32] as const)(
    'FAT%i: ** excludes every file and directory but never the volume label',
    async (fat) => {
      const { image } = build(fat, fat === 32 ? 40 * MiB : fat === 16 ? 16 * MiB : 4 * MiB, fat === 12 ? 4 : 1);
      const before = fsck(image);
      const plan = await planOn(image, ['**']);
      expect(plan.excluded.map((e) => e.path)).toEqual(['/A.BIN', '/B.BIN', '/C.BIN', '/dir', '/dir/inside.txt']);
      const rec = work.path(`all${n++}.img`);
      reconstruct(image, plan, rec);
      const report = fsck(rec);
      expect(report.clean, report.output).toBe(true);
      expect(report.usedClusters).toBe(before.usedClusters - plan.freedClusters);
      expect(report.usedClusters).toBe(fat === 32 ? 1 : 0); // the FAT32 root directory stays
      // (mdir exits non-zero on an empty root, so ask mcopy for each path.)
      for (const p of ['/A.BIN', '/B.BIN', '/C.BIN', '/dir/inside.txt']) expect(mcopyExists(rec, p), p).toBe(false);
      const v = await openVolume(rec);
      try {
        expect(v.info().label).toBe('EDGE');
        expect(await v.files()).toEqual([]);
      } finally {
        v.close();
      }
    },
  );

  it('a directory match takes its subtree; the allocation map after no longer holds it', async () => {
    const { image, l } = build(12, 4 * MiB, 4);
    const v0 = await openVolume(image);
    const d = await v0.stat('/dir');
    const f = await v0.stat('/dir/inside.txt');
    v0.close();
    const plan = await planOn(image, ['/DIR']);
    expect(plan.excluded).toEqual([
      { path: '/dir', size: 0, isDirectory: true },
      { path: '/dir/inside.txt', size: 700, isDirectory: false },
    ]);
    for (const c of [...chainOf(image, l, d.firstCluster), ...chainOf(image, l, f.firstCluster)]) {
      expect(plan.allocationMap.isAllocated(c)).toBe(false);
    }
    const rec = work.path(`s${n++}.img`);
    reconstruct(image, plan, rec);
    expect(fsck(rec).clean).toBe(true);
  });
});
