/**
 * The fuzz regression inputs (fuzz/regressions/, fuzz/fuzz_input.h) as disk
 * images through the public API: each fails with the LowtideError code that
 * fuzz/regressions/expected.json names, never a crash or another error.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LowtideError } from '../../lib/errors.js';
import { openVolume, readPartitions } from '../../lib/fs/index.js';
import { TempDir } from '../helpers/tmp.js';

const dir = path.resolve(import.meta.dirname, '../../fuzz/regressions');
const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Record<string, string>;
const tmp = new TempDir('lowtide-fuzz-');
afterAll(() => tmp.remove());

/** The disk an input describes: the image bytes, zeros up to the header's size. */
function toImage(input: Buffer, name: string): string {
  const sectors = Math.min(input.readUInt32LE(0), 1 << 18);
  const image = input.subarray(8);
  const file = tmp.file(name.replace('/', '-'));
  fs.writeFileSync(file, image);
  fs.truncateSync(file, Math.max(sectors * 512, image.length));
  return file;
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('fuzz regressions', () => {
  it('every committed input is listed with its code', () => {
    const files = ['partitions', 'fat_volume', 'fat_overlay'].flatMap((h) =>
      fs.existsSync(path.join(dir, h)) ? fs.readdirSync(path.join(dir, h)).map((f) => `${h}/${f}`) : [],
    );
    expect(files.sort()).toEqual(Object.keys(expected).sort());
  });

  it.each(Object.entries(expected))('%s fails with %s', async (name, code) => {
    const image = toImage(fs.readFileSync(path.join(dir, name)), name);
    const err = name.startsWith('partitions/')
      ? await failure(readPartitions(image))
      : await failure(
          (async () => {
            const v = await openVolume(image, { offset: 0 });
            try {
              await v.allocationMap();
              await v.scan();
            } finally {
              v.close();
            }
          })(),
        );
    expect(err).toBeInstanceOf(LowtideError);
    expect((err as LowtideError).code, String(err)).toBe(code);
  });
});
