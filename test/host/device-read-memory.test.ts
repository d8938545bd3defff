/**
 * A device read (readFrom 'device') of a plan of millions of extents: a FAT
 * volume whose free space is millions of one-cluster fragments, on XFS
 * (reflink=1) on a loop device, part of its data area written so that those
 * clusters are read from the device and the rest (holes) through the file.
 * The plan is split along the offset table as it is read, so the job's
 * memory stays that of a read through the file; the image equals the one
 * read through the file byte for byte. The CLI runs under /usr/bin/time for
 * its peak RSS. Everything is sparse: the volume takes its FATs and the
 * written stretch on disk.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout } from '../fixtures/fat/corrupt.js';
import { buildFragmentedVolume, type FragmentedVolume } from '../fixtures/fat/fragments.js';
import { haveTools } from '../fixtures/fat/tools.js';
import { cmp, lowtideMeasured, timeMissing } from '../helpers/cli.js';
import { LoopFs, loopFsUnavailableReason } from '../helpers/loop-fs.js';
import { skipReason } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
/** 2 GiB of 512-byte clusters, every other one used: 2 million free fragments. */
const VOLUME = 2048 * MiB;
/** Bytes of the data area written (the rest stays a hole): about 32 000 used clusters read from the device. */
const WRITTEN = 32 * MiB;
/**
 * Peak RSS allowed for either read. Reading the plan's 2 million extents
 * from the device takes about 150 MiB, as through the file; a device read
 * that turned them into objects (one per extent, one per piece) took 895 MiB.
 */
const BOUND = 300 * MiB;

const reason =
  loopFsUnavailableReason('xfs') ??
  (haveTools('mkfs.fat', 'fsck.fat') ? undefined : 'needs dosfstools') ??
  timeMissing();

describe.skipIf(skipReason('device read of millions of extents', reason))(
  'a device read of a plan of millions of extents',
  () => {
    let fs: LoopFs | undefined;
    const out = new TempDir('lowtide-device-memory-');
    let img = '';
    let vol: FragmentedVolume | undefined;

    beforeAll(() => {
      fs = new LoopFs('xfs', 512);
      img = fs.file('fragments.img');
      vol = buildFragmentedVolume(img, VOLUME);
      const l = layout(img);
      const fd = openSync(img, 'r+');
      try {
        // Past the root directory's cluster (cluster 2), so the volume stays valid.
        writeSync(fd, patternBytes(WRITTEN, 11), 0, WRITTEN, l.dataOffset + 4 * l.clusterSize);
        // Synced by the job itself before it maps the file.
      } finally {
        closeSync(fd);
      }
    }, 300_000);

    afterAll(() => {
      fs?.remove();
      out.remove();
    });

    it('stays under the bound and copies what the file read copies', () => {
      expect(vol!.freeFragments).toBeGreaterThan(2_000_000);
      const report = (what: string, m: { seconds: number; peakRssBytes: number }): void =>
        console.log(`${what}: ${m.seconds} s, peak RSS ${(m.peakRssBytes / MiB).toFixed(0)} MiB`);
      const fromFile = out.file('file.img');
      const f = lowtideMeasured(['image', img, fromFile, '--json', '--no-progress'], 900_000);
      report(`image of ${vol!.freeFragments} free fragments through the file`, f);
      expect(f.status, f.stderr).toBe(0);

      const fromDevice = out.file('device.img');
      const d = lowtideMeasured(['image', img, fromDevice, '--read-from-device', '--json', '--no-progress'], 900_000);
      report(`the same from ${fs!.device}`, d);
      expect(d.status, d.stderr).toBe(0);
      const s = JSON.parse(d.stdout) as {
        plan: { extentCount: number };
        readFrom: { device: string; bytesFromDevice: number; bytesFromFile: number };
      };
      expect(s.plan.extentCount).toBeGreaterThan(2_000_000);
      expect(s.readFrom.device).toBe(fs!.device);
      // The written stretch's used clusters (every other one) and the FATs come from the device.
      expect(s.readFrom.bytesFromDevice).toBeGreaterThan(WRITTEN / 2);
      expect(s.readFrom.bytesFromFile).toBeGreaterThan(0);
      expect(d.peakRssBytes).toBeLessThan(BOUND);
      expect(f.peakRssBytes).toBeLessThan(BOUND);
      expect(cmp(fromFile, fromDevice)).toBe(true);
    }, 1_800_000);
  },
);
