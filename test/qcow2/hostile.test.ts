/**
 * Damaged and hostile qcow2 images: each is a LowtideError with a stable
 * code and a message saying what is wrong, never a crash or a hang. And the
 * format-probing rule: a guest-written qcow2 header in a raw disk cannot make
 * lowtide read a host file.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { imageSource, LowtideError, openSource, type DiskFormat } from '../../lib/index.js';
import { attachLoop, detachLoop, hasCommand, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';

const tmp = new TempDir('lowtide-qcow2-bad-');
afterAll(() => tmp.remove());

const MiB = 1024 * 1024;
const noQemu = hasCommand('qemu-img') && hasCommand('qemu-io') ? undefined : 'qemu-utils is not installed';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', cwd: tmp.path, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A 4 MiB qcow2 (64 KiB clusters) with data in its first cluster. */
function image(name: string, extra: string[] = []): string {
  const p = tmp.file(name);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', ...extra, p, String(4 * MiB)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x61 0 64k', p]);
  return p;
}

function patch(path: string, edit: (b: Buffer) => void): void {
  const b = readFileSync(path);
  edit(b);
  writeFileSync(path, b);
}

/** Opens `path` and reads all of it; resolves with the error it failed with. */
async function failure(path: string, format: DiskFormat = 'qcow2'): Promise<LowtideError> {
  try {
    const src = await openSource(path, { format });
    try {
      for await (const b of src.read(undefined, { blockSize: 64 * 1024 })) void b;
    } finally {
      await src.close();
    }
  } catch (err) {
    expect(err).toBeInstanceOf(LowtideError);
    return err as LowtideError;
  }
  throw new Error(`${path} opened and read without an error`);
}

describe('damaged qcow2 images', () => {
  it('a truncated header', async () => {
    if (skipReason('qcow2', noQemu)) return;
    const p = image('truncated.qcow2');
    writeFileSync(p, readFileSync(p).subarray(0, 50));
    const e = await failure(p);
    expect([e.code, e.message]).toEqual(['QCOW2_CORRUPT', expect.stringMatching(/header is truncated/)]);
  });

  it('cluster_bits out of range (8 and 22)', async () => {
    if (skipReason('qcow2', noQemu)) return;
    for (const bits of [8, 22]) {
      const p = image(`bits-${bits}.qcow2`);
      patch(p, (b) => b.writeUInt32BE(bits, 20));
      const e = await failure(p);
      expect([e.code, e.message]).toEqual([
        'QCOW2_CORRUPT',
        expect.stringMatching(`cluster_bits ${bits} is outside 9..21`),
      ]);
    }
  });

  it('an L1 table past the end of the file, and one overlapping the header', async () => {
    if (skipReason('qcow2', noQemu)) return;
    const past = image('l1-past.qcow2');
    patch(past, (b) => b.writeBigUInt64BE(1n << 40n, 40));
    expect((await failure(past)).message).toMatch(/L1 table lies past the end of the file/);
    const header = image('l1-header.qcow2');
    patch(header, (b) => b.writeBigUInt64BE(0n, 40));
    const e = await failure(header);
    expect([e.code, e.message]).toEqual(['QCOW2_CORRUPT', expect.stringMatching(/L1 table overlaps the header/)]);
  });

  it('an L2 table or data cluster past the end of the file, or inside the header', async () => {
    if (skipReason('qcow2', noQemu)) return;
    const l1 = (b: Buffer): number => Number(b.readBigUInt64BE(40));
    const l2 = (b: Buffer): number => Number(b.readBigUInt64BE(l1(b)) & 0x00fffffffffffe00n);
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      [
        'l2-past',
        (b) => b.writeBigUInt64BE((1n << 63n) | (1n << 40n), l1(b)),
        /L2 table at offset \d+ lies past the end/,
      ],
      [
        'l2-header',
        (b) => b.writeBigUInt64BE((1n << 63n) | 0x200n, l1(b)),
        /L2 table offset 512 is not cluster-aligned/,
      ],
      [
        'data-past',
        (b) => b.writeBigUInt64BE((1n << 63n) | (1n << 40n), l2(b)),
        /data cluster at offset \d+ lies past the end/,
      ],
      [
        'data-header',
        (b) => b.writeBigUInt64BE((1n << 63n) | 0x400n, l2(b)),
        /data cluster offset 1024 is not cluster-aligned/,
      ],
    ];
    for (const [name, edit, message] of cases) {
      const p = image(`${name}.qcow2`);
      patch(p, edit);
      const e = await failure(p);
      expect([name, e.code, e.message]).toEqual([name, 'QCOW2_CORRUPT', expect.stringMatching(message)]);
    }
  });

  it('unsupported features are named: encryption, external data file, the corrupt bit, unknown bits', async () => {
    if (skipReason('qcow2', noQemu)) return;
    const luks = tmp.file('luks.qcow2');
    // qemu-img times PBKDF2 by the thread's CPU time to choose the LUKS
    // iterations, and gives up ("Unable to get accurate CPU usage") when its
    // first short round measures 0 ms on a fast CPU (a known QEMU bug of the
    // versions that moved the timing into its own thread); another try
    // measures again.
    for (let attempt = 1; ; attempt++) {
      try {
        run('qemu-img', [
          'create',
          '-q',
          '--object',
          'secret,id=s0,data=pw',
          '-f',
          'qcow2',
          '-o',
          'encrypt.format=luks,encrypt.key-secret=s0',
          luks,
          '1M',
        ]);
        break;
      } catch (err) {
        if (attempt >= 5 || !/accurate CPU usage/.test(String((err as { stderr?: unknown }).stderr))) throw err;
      }
    }
    expect(await failure(luks)).toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringMatching(/encryption \(LUKS\)/),
    });
    const ext = tmp.file('ext.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${tmp.file('ext.data')}`, ext, '1M']);
    expect(await failure(ext)).toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringMatching(/external data file/),
    });
    const corrupt = image('corrupt-bit.qcow2');
    patch(corrupt, (b) => b.writeBigUInt64BE(b.readBigUInt64BE(72) | 2n, 72));
    expect(await failure(corrupt)).toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringMatching(/marked corrupt/),
    });
    const unknown = image('unknown-bit.qcow2');
    patch(unknown, (b) => b.writeBigUInt64BE(b.readBigUInt64BE(72) | (1n << 9n), 72));
    expect(await failure(unknown)).toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringMatching(/feature bit 9/),
    });
  });

  it('a backing chain that loops, one deeper than 16 files, and a missing backing file', async () => {
    if (skipReason('qcow2', noQemu)) return;
    const a = image('loop-a.qcow2');
    image('loop-b.qcow2', ['-b', 'loop-a.qcow2', '-F', 'qcow2']);
    run('qemu-img', ['rebase', '-u', '-b', 'loop-b.qcow2', '-F', 'qcow2', a]);
    expect(await failure(a)).toMatchObject({
      code: 'QCOW2_CORRUPT',
      message: expect.stringMatching(/backing chain loops/),
    });

    image('deep-0.qcow2');
    for (let i = 1; i <= 17; i++) image(`deep-${i}.qcow2`, ['-b', `deep-${i - 1}.qcow2`, '-F', 'qcow2']);
    expect(await failure(tmp.file('deep-17.qcow2'))).toMatchObject({
      code: 'QCOW2_CORRUPT',
      message: expect.stringMatching(/deeper than 16/),
    });
    const ok = await openSource(tmp.file('deep-16.qcow2'), { format: 'qcow2' });
    expect(ok.virtualDisk?.layers.length).toBe(17);
    await ok.close();

    image('gone-base.qcow2');
    const top = image('gone-top.qcow2', ['-b', 'gone-base.qcow2', '-F', 'qcow2']);
    rmSync(tmp.file('gone-base.qcow2'));
    expect(await failure(top)).toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringMatching(/backing file .*gone-base/),
    });
  });
});

describe('format probing', () => {
  it('a qcow2 header written into a raw disk cannot name a host file: absolute, outside the directory, or raw', async () => {
    if (skipReason('qcow2', noQemu)) return;
    const secret = tmp.file('host-secret.raw');
    writeFileSync(secret, Buffer.alloc(4 * MiB, 0x53));
    mkdirSync(tmp.file('vm'));
    mkdirSync(tmp.file('elsewhere'));
    writeFileSync(tmp.file('elsewhere/other.qcow2'), '');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', tmp.file('elsewhere/other.qcow2'), String(4 * MiB)]);
    // What a guest could write at the start of its raw disk: qcow2 headers naming host files.
    const attacks: [string, string[], RegExp][] = [
      ['absolute.raw', ['-b', secret, '-F', 'raw'], /absolute backing file/],
      ['absolute-nofmt.raw', ['-b', tmp.file('elsewhere/other.qcow2'), '-F', 'qcow2'], /absolute backing file/],
      ['relative.raw', ['-b', '../elsewhere/other.qcow2', '-F', 'qcow2'], /does not lie in the image's directory/],
      ['beside-raw.raw', ['-b', 'beside.raw', '-F', 'raw'], /raw backing file/],
    ];
    writeFileSync(tmp.file('vm/beside.raw'), Buffer.alloc(4 * MiB, 0x42));
    for (const [name, backing, message] of attacks) {
      const disk = tmp.file(`vm/${name}`);
      run('qemu-img', ['create', '-q', '-u', '-f', 'qcow2', ...backing, `${disk}.tmp`, String(4 * MiB)]);
      renameSync(`${disk}.tmp`, disk);
      const e = await failure(disk, 'auto');
      expect([name, e.code, e.message]).toEqual([name, 'BACKING_REFUSED', expect.stringMatching(message)]);
      // The image job refuses it the same way.
      await expect(
        imageSource({ source: disk, output: tmp.file(`${name}.out`), format: 'auto' }),
      ).rejects.toMatchObject({
        code: 'BACKING_REFUSED',
      });
      // Read raw (the default), it is just the bytes of the disk.
      const raw = await openSource(disk);
      expect([raw.format, raw.size]).toEqual(['raw', readFileSync(disk).length]);
      await raw.close();
    }
    // Named explicitly, the backing file is followed.
    const named = await openSource(tmp.file('vm/absolute.raw'), { format: 'qcow2' });
    expect(named.virtualDisk?.layers.map((l) => l.format)).toEqual(['qcow2', 'raw']);
    await named.close();
    // A probed image with a qcow2 backing file beside it is followed.
    image('vm/base.qcow2');
    const top = image('vm/top.qcow2', ['-b', 'base.qcow2', '-F', 'qcow2']);
    const probed = await openSource(top, { format: 'auto' });
    expect([probed.format, probed.virtualDisk?.probed, probed.virtualDisk?.layers.length]).toEqual(['qcow2', true, 2]);
    await probed.close();
  });

  it('a block device is raw under auto, even when it holds a qcow2 header', async () => {
    if (skipReason('qcow2', noQemu) || skipReason('loop device', loopUnavailableReason())) return;
    const p = image('on-loop.qcow2');
    const dev = attachLoop(p);
    try {
      const auto = await openSource(dev, { format: 'auto' });
      expect([auto.kind, auto.format]).toEqual(['block', 'raw']);
      await auto.close();
      const named = await openSource(dev, { format: 'qcow2', direct: 'off' });
      expect([named.format, named.size]).toEqual(['qcow2', 4 * MiB]);
      await named.close();
    } finally {
      detachLoop(dev);
    }
  });
});
