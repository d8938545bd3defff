/**
 * Jobs on qcow2 sources: a FAT32 inside a qcow2 imaged with exclusions
 * (fsck.fat, mcopy), and backup + restore of the guest disk.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, imageSource, initRepository, restore } from '../../lib/index.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';

const tmp = new TempDir('lowtide-qcow2-jobs-');
afterAll(() => tmp.remove());

const MiB = 1024 * 1024;
const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
const tools = ['qemu-img', 'qemu-io', 'mkfs.fat', 'fsck.fat', 'mcopy', 'mmd'];
const missingTool = tools.find((t) => !hasCommand(t));
const noTools =
  missingTool === undefined ? undefined : `${missingTool} is not installed (qemu-utils, dosfstools, mtools)`;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A FAT32 file system built on a raw file, converted to qcow2 (64 KiB clusters). */
function fatQcow2(name: string): { img: string; files: Record<string, Buffer> } {
  const raw = tmp.file(`${name}.raw`);
  run('truncate', ['-s', String(48 * MiB), raw]);
  run('mkfs.fat', ['-F', '32', '--invariant', raw]);
  run('mmd', ['-i', raw, '::/Docs']);
  const files: Record<string, Buffer> = {
    '/big.bin': patternBytes(3 * MiB + 123, 1),
    '/Docs/small.txt': patternBytes(5000, 2),
    '/Docs/skip.tmp': patternBytes(2 * MiB, 3),
  };
  for (const [p, data] of Object.entries(files)) {
    const local = tmp.file(`${name}-put`);
    writeFileSync(local, data);
    run('mcopy', ['-i', raw, local, `::${p}`]);
  }
  const img = tmp.file(`${name}.qcow2`);
  run('qemu-img', ['convert', '-q', '-O', 'qcow2', '-o', 'cluster_size=65536', raw, img]);
  return { img, files };
}

function mcopyOut(image: string, path: string): Buffer | undefined {
  const out = tmp.file(`mcopy-${Math.random().toString(36).slice(2)}`);
  const r = spawnSync('mcopy', ['-n', '-i', image, `::${path}`, out], { env });
  return r.status === 0 ? readFileSync(out) : undefined;
}

describe('jobs on qcow2 sources', () => {
  it("the default throttle probes the image file, inside the file's size, not the guest disk's", async () => {
    if (skipReason('qcow2 probes', noTools)) return;
    // A 1 GiB guest disk whose file holds 32 MiB: probe places spread over the
    // guest's size would lie past the file's end.
    const img = tmp.file('probes.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1G']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x5a 0 32M', img]);
    const out = tmp.file('probes-out.img');
    const r = await imageSource({ source: img, output: out, format: 'qcow2' });
    expect(r.throttle.probeError).toBeUndefined();
    expect(r.throttle.probes!.count).toBeGreaterThan(0);
    expect(r.throttle.storageDevices?.length).toBeGreaterThan(0);
    const raw = tmp.file('probes-expected.raw');
    run('qemu-img', ['convert', '-q', '-O', 'raw', img, raw]);
    expect(cmp(out, raw)).toBe(true);
  });

  it('images a FAT32 inside a qcow2 with exclusions: fsck.fat clean, kept files equal, excluded gone', () => {
    if (skipReason('FAT32 in qcow2', noTools)) return;
    const { img, files } = fatQcow2('fat');
    const out = tmp.file('fat-out.img');
    const r = lowtide(['image', img, out, '--format', 'qcow2', '--exclude', '**/*.tmp', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as {
      size: number;
      bytesRead: number;
      plan: { partitions: { mode: string }[] };
    };
    expect(summary.size).toBe(48 * MiB);
    expect(summary.plan.partitions[0]?.mode).toBe('used');
    // Only used clusters of the guest are read: the kept files and metadata, not the excluded file.
    expect(summary.bytesRead).toBeLessThan(5 * MiB);
    const fsck = spawnSync('fsck.fat', ['-n', out], { encoding: 'utf8' });
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
    expect(mcopyOut(out, '/big.bin')?.equals(files['/big.bin']!)).toBe(true);
    expect(mcopyOut(out, '/Docs/small.txt')?.equals(files['/Docs/small.txt']!)).toBe(true);
    expect(mcopyOut(out, '/Docs/skip.tmp')).toBeUndefined();
  });

  it('files and extract read the FAT of the guest disk', () => {
    if (skipReason('FAT32 in qcow2', noTools)) return;
    const { img, files } = fatQcow2('files');
    const list = lowtide(['files', img, '--format', 'auto', '--json']);
    expect(list.status, list.stderr).toBe(0);
    const paths = (JSON.parse(list.stdout) as { entries: { path: string }[] }).entries.map((e) => e.path);
    expect(paths).toEqual(expect.arrayContaining(['/big.bin', '/Docs/small.txt']));
    const dest = tmp.file('extracted-small.txt');
    const x = lowtide(['extract', img, '/Docs/small.txt', dest, '--format', 'qcow2']);
    expect(x.status, x.stderr).toBe(0);
    expect(readFileSync(dest).equals(files['/Docs/small.txt']!)).toBe(true);
    const inspect = lowtide(['inspect', img, '--format', 'qcow2', '--json']);
    expect(inspect.status, inspect.stderr).toBe(0);
    const info = JSON.parse(inspect.stdout) as {
      size: number;
      format: string;
      virtualDisk: { clusterSize: number; allocatedBytes: number; layers: unknown[] };
      partitions: { fileSystem: string }[];
    };
    expect([info.format, info.size, info.virtualDisk.clusterSize, info.virtualDisk.layers.length]).toEqual([
      'qcow2',
      48 * MiB,
      65536,
      1,
    ]);
    expect(info.virtualDisk.allocatedBytes).toBeGreaterThan(5 * MiB);
    expect(info.partitions[0]?.fileSystem).toBe('fat32');
  });

  it('backs up the guest disk and restores it as a raw sparse image equal to qemu-img convert', async () => {
    if (skipReason('qcow2 backup', noTools)) return;
    const img = tmp.file('backup.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, String(20 * MiB)]);
    run('qemu-io', ['-c', 'write -P 0x31 0 1M', '-c', 'write -P 0x32 7M 300k', '-c', 'write -z 7100k 8k', img]);
    const oracle = tmp.file('backup.oracle.raw');
    run('qemu-img', ['convert', '-O', 'raw', img, oracle]);
    const repo = tmp.file('repo');
    await initRepository(repo);
    const { manifest } = await backup({ source: img, repository: repo, format: 'qcow2', throttle: 'off' });
    expect(manifest.size).toBe(20 * MiB);
    expect(manifest.stats.bytesRead).toBeLessThanOrEqual(1 * MiB + 300 * 1024);
    const target = tmp.file('restored.raw');
    await restore({ repository: repo, backup: manifest.id, target });
    expect(cmp(oracle, target)).toBe(true);
    // The image job writes the same guest disk.
    const image = tmp.file('imaged.raw');
    await imageSource({ source: img, output: image, format: 'qcow2', throttle: 'off' });
    expect(cmp(oracle, image)).toBe(true);
  });
});
