import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LowtideError, ioUringAvailable, openSource, type EngineName } from '../../lib/index.js';
import { CLI } from '../helpers/cli.js';
import { faultyByte, faultyFsUnavailableReason, mountFaulty, type FaultyMount } from '../helpers/faulty.js';
import { skipReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const BAD = 5 * MiB + 8192;
const reason = faultyFsUnavailableReason();
const engines: EngineName[] = ioUringAvailable() ? ['io_uring', 'threads'] : ['threads'];

describe.skipIf(skipReason('EIO tests on a faulty FUSE file', reason))('a source that returns EIO', () => {
  const tmp = new TempDir();
  let mount: FaultyMount;
  beforeAll(async () => {
    mount = await mountFaulty(tmp.file('mnt'), SIZE, BAD, 4096);
  });
  afterAll(async () => {
    await mount?.unmount();
    tmp.remove();
  });

  it.each(engines)('%s: the read fails with IO_ERROR, errno EIO and the offset of the failed block', async (engine) => {
    const src = await openSource(mount.file);
    try {
      let good = 0;
      const err = await (async () => {
        for await (const b of src.read(undefined, { blockSize: MiB, queueDepth: 4, engine })) {
          for (let i = 0; i < b.length; i += 4096) expect(b.data[i]).toBe(faultyByte(b.offset + i));
          good += b.length;
        }
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LowtideError);
      const e = err as LowtideError;
      expect(e.code).toBe('IO_ERROR');
      expect(e.errno).toBe(5);
      expect(e.offset).toBe(5 * MiB); // the 1 MiB block that holds the bad range
      expect(e.message).toContain('Input/output error');
      expect(e.message).toContain(mount.file);
      expect(good).toBeLessThanOrEqual(5 * MiB);
    } finally {
      await src.close();
    }
  });

  it('extents that avoid the bad range read fine', async () => {
    const src = await openSource(mount.file);
    try {
      let n = 0;
      for await (const b of src.read([
        { offset: 0, length: 5 * MiB },
        { offset: 6 * MiB, length: 2 * MiB },
      ])) {
        expect(b.data[0]).toBe(faultyByte(b.offset));
        n += b.length;
      }
      expect(n).toBe(7 * MiB);
    } finally {
      await src.close();
    }
  });

  it('lowtide image exits 1 with the error and leaves no output', () => {
    const out = tmp.file('eio.img');
    const r = spawnSync(process.execPath, [CLI, 'image', mount.file, out], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^lowtide: error \[IO_ERROR\]: read of .* failed at offset 5242880/);
    expect(existsSync(out)).toBe(false);
  });
});
