import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { planImage } from '../../lib/fs/plan.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { populate } from '../fixtures/fat/populate.js';
import { haveTools, mkfs, Mtools, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = !haveTools('mkfs.fat', 'mcopy')
  ? 'needs dosfstools and mtools'
  : !hasCommand('partclone.fat') || !hasCommand('partclone.info')
    ? 'partclone is not installed (Debian package partclone)'
    : undefined;

/** "Space in use: ... = N Blocks" and "Block size: B Byte" from partclone's output. */
function partcloneUsedBytes(text: string): number {
  const used = /Space in use:.*?=\s*(\d+) Blocks/.exec(text);
  const bs = /Block size:\s*(\d+) Byte/.exec(text);
  if (!used || !bs) throw new Error(`unexpected partclone.info output:\n${text}`);
  return Number(used[1]) * Number(bs[1]);
}

describe.skipIf(skipReason('partclone as an oracle of used blocks', missing))(
  'used blocks agree with partclone',
  () => {
    const work = new Workdir('lowtide-partclone-');
    afterAll(() => work.cleanup());

    it.each([16, 32] as const)('FAT%i: the bytes lowtide reads are the bytes partclone.fat calls used', async (fat) => {
      const vol = work.path(`fat${fat}.img`);
      writeFileSync(vol, pseudoRandom(40 * MiB, fat));
      mkfs(vol, 40 * MiB, { fat, sectorsPerCluster: fat === 32 ? 1 : 4 });
      populate(new Mtools(vol), work.dir, { clusterSize: fat === 32 ? 512 : 2048, seed: fat });
      const out = work.path(`fat${fat}.pcl`);
      const log = work.path(`fat${fat}.log`);
      const c = spawnSync('partclone.fat', ['-c', '-s', vol, '-o', out, '-L', log], { encoding: 'utf8' });
      expect(c.status).toBe(0);
      const info = spawnSync('partclone.info', ['-s', out, '-L', log], { encoding: 'utf8' });
      const plan = await planImage({ source: vol });
      expect(plan.bytesToRead).toBe(partcloneUsedBytes(`${info.stdout}${info.stderr}`));
    });
  },
);
