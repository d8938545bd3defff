/**
 * The choice of a disk's dirty-bitmap generation (planDiskCbt): an
 * incremental only from exactly one usable, recorded generation; every other
 * case is a full backup that says why.
 */
import { describe, expect, it } from 'vitest';
import { planDiskCbt, rotationActions, type CbtBase } from '../../lib/snapshot/cbt.js';
import type { QmpDirtyBitmap } from '../../lib/advanced.js';

const MiB = 1 << 20;
const RUN = '20261206T000000Z-00000001';

function bitmap(name: string, extra: Partial<QmpDirtyBitmap> = {}): QmpDirtyBitmap {
  return { name, recording: true, persistent: true, busy: false, granularity: 65536, count: 0, ...extra };
}

function plan(bitmaps: QmpDirtyBitmap[], bases: CbtBase[] = [], last?: string, format = 'qcow2', size = 16 * MiB) {
  const byName = new Map(bases.map((b) => [b.bitmap, b]));
  return planDiskCbt({ format, bitmaps, virtualSize: size }, RUN, (n) => byName.get(n), last);
}

const base: CbtBase = { bitmap: 'lowtide-a', backupId: 'b1', virtualSize: 16 * MiB };

describe('planDiskCbt', () => {
  it('an incremental from the one recording, recorded generation; other lowtide bitmaps are stale', () => {
    const p = plan([bitmap('lowtide-a'), bitmap('lowtide-old', { recording: false }), bitmap('mine')], [base]);
    expect(p).toEqual({
      bitmap: `lowtide-${RUN}`,
      previousBitmap: 'lowtide-a',
      parent: 'b1',
      fullReason: null,
      stale: ['lowtide-old'],
    });
    expect(rotationActions('n', p)).toEqual([
      { type: 'block-dirty-bitmap-add', data: { node: 'n', name: `lowtide-${RUN}`, persistent: true } },
      { type: 'block-dirty-bitmap-disable', data: { node: 'n', name: 'lowtide-a' } },
    ]);
  });

  it.each([
    [
      'raw disk',
      plan([], [], undefined, 'raw'),
      /^raw disk: QEMU keeps persistent dirty bitmaps in qcow2 images only$/,
    ],
    ['first backup', plan([bitmap('mine')]), /^first backup of the disk with changed-block tracking$/],
    ['bitmap gone', plan([], [base], 'lowtide-a'), /^the dirty bitmap lowtide-a of the last backup is not on the disk/],
    ['inconsistent', plan([bitmap('lowtide-a', { inconsistent: true })], [base]), /lowtide-a is inconsistent/],
    [
      'inconsistent, not recording',
      plan([bitmap('lowtide-a', { inconsistent: true, recording: false })], [base], 'lowtide-a'),
      /lowtide-a is inconsistent/,
    ],
    ['busy', plan([bitmap('lowtide-a', { busy: true })], [base]), /lowtide-a is in use/],
    ['not persistent', plan([bitmap('lowtide-a', { persistent: false })], [base]), /lowtide-a is not persistent/],
    ['two recording', plan([bitmap('lowtide-a'), bitmap('lowtide-b')], [base]), /more than one lowtide dirty bitmap/],
    ['unrecorded', plan([bitmap('lowtide-x')], [base]), /no backup in the repository was taken at .*lowtide-x/],
    [
      'resized',
      plan([bitmap('lowtide-a')], [base], undefined, 'qcow2', 32 * MiB),
      /the disk's size changed since backup b1/,
    ],
  ])('%s: a full backup with the reason', (_name, p, reason) => {
    expect(p.previousBitmap).toBeNull();
    expect(p.parent).toBeNull();
    expect(p.fullReason).toMatch(reason);
  });

  it('a full backup of a qcow2 disk removes every lowtide bitmap and adds the next one', () => {
    const p = plan([bitmap('lowtide-x'), bitmap('lowtide-y', { recording: false }), bitmap('mine')], [base]);
    expect(p.stale).toEqual(['lowtide-x', 'lowtide-y']);
    expect(rotationActions('n', p)).toEqual([
      { type: 'block-dirty-bitmap-add', data: { node: 'n', name: `lowtide-${RUN}`, persistent: true } },
    ]);
    expect(rotationActions('n', plan([], [], undefined, 'raw'))).toEqual([]);
  });
});
