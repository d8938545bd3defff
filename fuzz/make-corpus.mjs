#!/usr/bin/env node
/**
 * Seed corpus for the fuzz harnesses, made with the tools the test fixtures
 * use: mkfs.fat (FAT12/16/32), mtools (files, long names, directories,
 * deletions), sfdisk (MBR with logical partitions, GPT) and qemu-img/qemu-io
 * (qcow2 images; skipped with a message when qemu-utils is missing). Writes
 * build/fuzz/corpus/<harness>/ in the harnesses' input format
 * (fuzz/fuzz_input.h): an 8-byte header (disk sectors, options) and the image
 * with its trailing zeros cut, so seeds stay small.
 *
 * Usage: node fuzz/make-corpus.mjs [outDir]
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const out = path.resolve(process.argv[2] ?? path.join(root, 'build/fuzz/corpus'));
const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8' };
const KiB = 1024;
const MiB = 1024 * KiB;

function run(cmd, args, input) {
  execFileSync(cmd, args, { env, input, stdio: ['pipe', 'ignore', 'pipe'] });
}

const tools = ['mkfs.fat', 'mcopy', 'mmd', 'mdel', 'mlabel', 'sfdisk'];
const dirs = [...(process.env.PATH ?? '').split(':'), '/sbin', '/usr/sbin'];
const missing = tools.filter((t) => !dirs.some((d) => d !== '' && fs.existsSync(path.join(d, t))));
if (missing.length > 0) {
  console.error(`make-corpus: missing ${missing.join(', ')} (Debian: dosfstools mtools fdisk)`);
  process.exit(1);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lowtide-corpus-'));
let seeds = 0;

/** Writes `image` as a seed of `harness` with `options`, trailing zeros cut. */
function seed(harness, name, image, options = 0, keep = Infinity) {
  const data = fs.readFileSync(image);
  let end = Math.min(data.length, keep);
  while (end > 0 && data[end - 1] === 0) end--;
  const header = Buffer.alloc(8);
  header.writeUInt32LE(Math.ceil(data.length / 512), 0);
  header.writeUInt32LE(options >>> 0, 4);
  fs.mkdirSync(path.join(out, harness), { recursive: true });
  fs.writeFileSync(path.join(out, harness, name), Buffer.concat([header, data.subarray(0, end)]));
  seeds++;
}

function blank(name, bytes) {
  const p = path.join(work, name);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, bytes);
  return p;
}

function mkfs(image, fat, extra = [], offsetSectors, kib) {
  const args = ['-F', String(fat), '--invariant', ...extra];
  if (offsetSectors !== undefined) args.push(`--offset=${offsetSectors}`);
  args.push(image);
  if (kib !== undefined) args.push(String(kib));
  run('mkfs.fat', args);
}

/** A small tree: nested directories, long and 8.3 names, a multi-cluster file, a deleted file, a label. */
function populate(image, offset = 0) {
  const spec = offset === 0 ? image : `${image}@@${offset}`;
  const put = (p, data) => {
    const local = path.join(work, 'put.tmp');
    fs.writeFileSync(local, data);
    run('mcopy', ['-o', '-i', spec, local, `::${p}`]);
  };
  run('mlabel', ['-i', spec, '::SEEDS']);
  for (const d of ['/Docs', '/Docs/a', '/Docs/a/b', '/EMPTY']) run('mmd', ['-i', spec, `::${d}`]);
  put('/README.TXT', 'hello\n');
  put('/A long file name with spaces.txt', 'long name\n');
  put('/Docs/a/b/leaf.bin', Buffer.alloc(5000, 0x5a));
  put('/Docs/Ünïcödé.txt', 'accents\n');
  put('/gone.txt', 'deleted\n');
  run('mdel', ['-i', spec, '::/gone.txt']);
  put('/BIG.DAT', Buffer.alloc(20 * KiB, 0xa5));
}

try {
  // FAT volumes (superfloppies): fat_volume and fat_overlay seeds.
  const fats = [
    { name: 'fat12', fat: 12, bytes: 1 * MiB, extra: ['-s', '1'] },
    { name: 'fat12-4k', fat: 12, bytes: 2 * MiB, extra: ['-S', '4096', '-s', '1'] },
    { name: 'fat16', fat: 16, bytes: 4 * MiB, extra: ['-s', '1'] },
    // mtools cannot write to a FAT32 this small: it stays empty.
    { name: 'fat32-small', fat: 32, bytes: 2 * MiB, extra: ['-s', '1'], empty: true },
    { name: 'fat32', fat: 32, bytes: 33 * MiB, extra: ['-s', '1', '-f', '1'] },
  ];
  for (const f of fats) {
    const img = blank(`${f.name}.img`, f.bytes);
    mkfs(img, f.fat, f.extra);
    seed('fat_volume', `${f.name}-empty`, img);
    if (f.empty) continue;
    populate(img);
    seed('fat_volume', f.name, img, 0x0005);
    seed('partitions', f.name, img);
    // Exclusions: one file, a directory tree, everything, by 8.3 name, and refused paths.
    for (const [tag, opts] of [
      ['file', 0x0001],
      ['dir', 0x0002],
      ['many', 0xffff],
      ['upper', 0x1000c],
      ['missing', 0x20001],
      ['root', 0x40001],
    ])
      seed('fat_overlay', `${f.name}-${tag}`, img, opts);
  }

  // MBR: two primaries (one FAT12) and an extended partition with two
  // logical ones (one FAT12), packed at the start of the disk.
  {
    const img = blank('mbr.img', 2 * MiB);
    run(
      'sfdisk',
      ['--quiet', '--no-reread', '--no-tell-kernel', img],
      'label: dos\nstart=64, size=1024, type=1\nstart=1088, size=64, type=83\n' +
        'start=1152, size=1600, type=5\nstart=1216, size=512, type=1\nstart=1792, size=128, type=83\n',
    );
    mkfs(img, 12, ['-s', '1'], 64, 512);
    populate(img, 64 * 512);
    mkfs(img, 12, ['-s', '1'], 1216, 256);
    seed('partitions', 'mbr-logical', img);
    seed('partitions', 'mbr-logical-cut', img, 0, 600 * KiB);
  }
  // An empty MBR, and a protective MBR without a GPT.
  {
    const img = blank('empty-mbr.img', 1 * MiB);
    run('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', img], 'label: dos\n');
    seed('partitions', 'mbr-empty', img);
    const p = fs.readFileSync(img);
    p.writeUInt8(0xee, 0x1be + 4);
    p.writeUInt32LE(1, 0x1be + 8);
    p.writeUInt32LE(2047, 0x1be + 12);
    fs.writeFileSync(img, p);
    seed('partitions', 'pmbr-no-gpt', img);
  }
  // GPT: small partitions (both headers in the seed), one FAT12; and the same
  // disk cut short (backup header lost) and with a damaged primary header.
  {
    const img = blank('gpt.img', 192 * KiB);
    run(
      'sfdisk',
      ['--quiet', '--no-reread', '--no-tell-kernel', img],
      'label: gpt\nfirst-lba: 34\nstart=40, size=256, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"\n' +
        'start=296, size=16, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="Linux"\n',
    );
    mkfs(img, 12, ['-s', '1'], 40, 128);
    populate(img, 40 * 512);
    seed('partitions', 'gpt', img);
    seed('partitions', 'gpt-raw-crc', img, 1);
    seed('partitions', 'gpt-cut', img, 0, 64 * KiB);
    const p = fs.readFileSync(img);
    p.writeUInt32LE(0, 512 + 16); // primary header CRC
    fs.writeFileSync(img, p);
    seed('partitions', 'gpt-bad-primary', img, 1);
  }
  // qcow2: cluster sizes, version 2, extended L2, zero clusters, compressed
  // clusters (deflate and zstd), a backing file name.
  if (['qemu-img', 'qemu-io'].every((t) => dirs.some((d) => d !== '' && fs.existsSync(path.join(d, t))))) {
    const writes = ['write -P 0xab 0 70k', 'write -z 1M 64k', 'write -P 0x11 2100k 3k', 'write -P 0x22 3M 600k'];
    const kinds = [
      { name: 'c64k', opts: 'cluster_size=65536' },
      { name: 'c512', opts: 'cluster_size=512' },
      { name: 'v2', opts: 'compat=0.10,cluster_size=4096' },
      { name: 'ext-l2', opts: 'cluster_size=65536,extended_l2=on' },
      { name: 'backing', opts: 'cluster_size=4096,backing_file=base.qcow2,backing_fmt=qcow2' },
    ];
    const base = path.join(work, 'base.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '4M']);
    for (const k of kinds) {
      const img = path.join(work, `${k.name}.qcow2`);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', k.opts, img, '4M']);
      run('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), img]);
      seed('qcow2', k.name, img);
    }
    {
      const img = path.join(work, 'bitmaps.qcow2');
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '4M']);
      run('qemu-img', ['bitmap', '--add', '--enable', img, 'b0']);
      run('qemu-img', ['bitmap', '--add', '--enable', '-g', '1024', img, 'b1']);
      run('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), img]);
      seed('qcow2', 'bitmaps', img);
    }
    for (const type of ['zlib', 'zstd']) {
      const img = path.join(work, `${type}.qcow2`);
      run('qemu-img', [
        'convert',
        '-q',
        '-c',
        '-f',
        'qcow2',
        '-O',
        'qcow2',
        '-o',
        `compression_type=${type},cluster_size=4096`,
        path.join(work, 'c64k.qcow2'),
        img,
      ]);
      seed('qcow2', `compressed-${type}`, img);
    }
  } else {
    console.error('make-corpus: qemu-img/qemu-io missing (Debian: qemu-utils): no qcow2 seeds');
  }
  console.log(`make-corpus: ${seeds} seeds in ${out}`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
