/**
 * Persistent dirty bitmaps of qcow2 images: the changed extents equal what
 * `nbdinfo --map=qemu:dirty-bitmap:NAME` reports over `qemu-nbd -r -B NAME`;
 * an in-use bitmap is BITMAP_IN_USE and never used; `backup
 * --changed-bitmap` reads only what the bitmap marks and restores correctly.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository, openSource, restore, type Extent } from '../../lib/index.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { TempDir } from '../helpers/tmp.js';

const tmp = new TempDir('lowtide-qcow2-bitmaps-');
afterAll(() => tmp.remove());

const MiB = 1024 * 1024;
const missing = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'].find((t) => !hasCommand(t));
const noTools = missing === undefined ? undefined : `${missing} is not installed (qemu-utils, libnbd-bin)`;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The dirty ranges nbdinfo reports for bitmap `name`, through a qemu-nbd it starts and stops itself. */
function nbdDirty(image: string, name: string): Extent[] {
  const map = JSON.parse(
    run('nbdinfo', [
      '--json',
      `--map=qemu:dirty-bitmap:${name}`,
      '--',
      '[',
      'qemu-nbd',
      '-r',
      '-f',
      'qcow2',
      '-B',
      name,
      image,
      ']',
    ]),
  ) as { offset: number; length: number; type: number }[];
  const out: { offset: number; length: number }[] = [];
  for (const m of map) {
    if ((m.type & 1) === 0) continue;
    const last = out.at(-1);
    if (last && last.offset + last.length === m.offset) last.length += m.length;
    else out.push({ offset: m.offset, length: m.length });
  }
  return out;
}

function writes(image: string, seed: number, count: number): void {
  let x = seed;
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const off = 512 * (x % ((15 * MiB) / 512));
    const len = 512 * (1 + (x % 300));
    cmds.push('-c', `write -P ${1 + (x % 250)} ${off} ${len}`);
  }
  run('qemu-io', ['-f', 'qcow2', ...cmds, image]);
}

/** Sets the in-use flag of the first bitmap in the directory (what a crash of QEMU leaves). */
function markInUse(image: string): void {
  const b = readFileSync(image);
  let ext = b.readUInt32BE(100); // header_length (version 3)
  for (;;) {
    const type = b.readUInt32BE(ext);
    const len = b.readUInt32BE(ext + 4);
    if (type === 0) throw new Error('no bitmaps extension');
    if (type === 0x23852875) {
      const dir = Number(b.readBigUInt64BE(ext + 8 + 16));
      b.writeUInt32BE(b.readUInt32BE(dir + 12) | 1, dir + 12);
      writeFileSync(image, b);
      return;
    }
    ext += 8 + Math.ceil(len / 8) * 8;
  }
}

describe('qcow2 dirty bitmaps', () => {
  it('changed extents equal nbdinfo over qemu-nbd -B, for 64 KiB and 16 KiB granularity', async () => {
    if (skipReason('qcow2 bitmaps', noTools)) return;
    const img = tmp.file('bm.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(16 * MiB)]);
    run('qemu-img', ['bitmap', '--add', '--enable', img, 'b64k']);
    run('qemu-img', ['bitmap', '--add', '--enable', '-g', '16384', img, 'b16k']);
    writes(img, 3, 25);
    const src = await openSource(img, { format: 'qcow2' });
    try {
      expect(src.virtualDisk?.bitmaps).toEqual([
        { name: 'b64k', granularity: 65536, inUse: false, enabled: true },
        { name: 'b16k', granularity: 16384, inUse: false, enabled: true },
      ]);
      for (const name of ['b64k', 'b16k']) {
        const mine = await src.bitmapExtents(name);
        expect(mine.length).toBeGreaterThan(0);
        expect(mine).toEqual(nbdDirty(img, name));
      }
      await expect(src.bitmapExtents('nope')).rejects.toMatchObject({
        code: 'NOT_FOUND',
        message: expect.stringMatching(/no bitmap named 'nope' \(bitmaps: b64k, b16k\)/),
      });
    } finally {
      await src.close();
    }
    const r = lowtide(['bitmaps', img, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { bitmaps: { name: string; extents: [number, number][] }[] };
    expect(doc.bitmaps[0]?.extents).toEqual(nbdDirty(img, 'b64k').map((e) => [e.offset, e.length]));
  });

  it('an in-use bitmap is BITMAP_IN_USE and never used', async () => {
    if (skipReason('qcow2 bitmaps', noTools)) return;
    const img = tmp.file('inuse.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(16 * MiB)]);
    run('qemu-img', ['bitmap', '--add', '--enable', img, 'cbt']);
    writes(img, 9, 5);
    markInUse(img);
    const src = await openSource(img, { format: 'qcow2' });
    expect(src.virtualDisk?.bitmaps[0]?.inUse).toBe(true);
    await expect(src.bitmapExtents('cbt')).rejects.toMatchObject({ code: 'BITMAP_IN_USE' });
    await src.close();
    const list = lowtide(['bitmaps', img, '--json']);
    expect(list.status, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { bitmaps: { inUse: boolean; extents: null }[] }).bitmaps[0]).toMatchObject({
      inUse: true,
      extents: null,
    });
    const repo = tmp.file('inuse-repo');
    await initRepository(repo);
    const r = lowtide(['backup', img, '--repo', repo, '--format', 'qcow2', '--changed-bitmap', 'cbt']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/BITMAP_IN_USE/);
  });

  it('backup --changed-bitmap reads only what the bitmap marks; the restore equals qemu-img convert', async () => {
    if (skipReason('qcow2 bitmaps', noTools)) return;
    const img = tmp.file('incr.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(16 * MiB)]);
    writes(img, 1, 30);
    const repo = tmp.file('incr-repo');
    await initRepository(repo);
    const full = await backup({ source: img, repository: repo, format: 'qcow2', throttle: 'off' });
    run('qemu-img', ['bitmap', '--add', '--enable', img, 'since-full']);
    writes(img, 2, 6);
    const incr = await backup({
      source: img,
      repository: repo,
      format: 'qcow2',
      changedBitmap: 'since-full',
      throttle: 'off',
    });
    expect(incr.manifest.parent).toBe(full.id);
    expect(incr.manifest.stats.bytesRead).toBeLessThan(full.manifest.stats.bytesRead);
    const oracle = tmp.file('incr.oracle.raw');
    run('qemu-img', ['convert', '-O', 'raw', img, oracle]);
    const target = tmp.file('incr.restored.raw');
    await restore({ repository: repo, backup: incr.id, target });
    expect(cmp(oracle, target)).toBe(true);
  });
});
