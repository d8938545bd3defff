import { closeSync, existsSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository, restore } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { cmp } from '../helpers/cli.js';
import { attachLoop, detachLoop, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;

describe('restore targets', () => {
  const work = new Workdir('lowtide-restore-target-');
  afterAll(() => work.cleanup());

  async function oneBackup(name: string): Promise<{ repo: string; id: string; src: string }> {
    const src = work.path(`${name}.img`);
    writeFileSync(src, pseudoRandom(2 * MiB, 7));
    const repo = work.path(`repo-${name}`);
    await initRepository(repo, { chunkSize: 256 * 1024 });
    const b = await backup({ source: src, repository: repo, allBlocks: true });
    return { repo, id: b.id, src };
  }

  it('removes the stale partial file of a killed restore to the same target, and only that', async () => {
    const { repo, id, src } = await oneBackup('partial');
    const target = work.path('out.img');
    const stale = work.path('.out.img.0123456789ab.lowtide-partial');
    writeFileSync(stale, Buffer.alloc(2 * MiB)); // a killed restore's leftover, full size
    const decoys = [
      work.path('.out.img.0123456789.lowtide-partial'), // not the naming scheme (10 hex)
      work.path('.out.img.0123456789AB.lowtide-partial'), // upper case: not ours
      work.path('.other.img.0123456789ab.lowtide-partial'), // another target's
      work.path('.out.img.0123456789ab.lowtide-partial.keep'),
    ];
    for (const d of decoys) writeFileSync(d, 'keep');
    // One that a running restore holds (its flock).
    const live = work.path('.out.img.aaaaaaaaaaaa.lowtide-partial');
    writeFileSync(live, 'live');
    const fd = openSync(live, 'r');
    try {
      expect(native.tryLockExclusive(fd)).toBe(true);
      const r = await restore({ repository: repo, backup: id, target });
      expect(r.removedPartials).toEqual([stale]);
    } finally {
      closeSync(fd);
    }
    expect(existsSync(stale)).toBe(false);
    for (const d of [...decoys, live]) expect(readFileSync(d, 'utf8')).toMatch(/keep|live/);
    expect(cmp(src, target)).toBe(true);
    // A symbolic link named like a partial file is not followed or removed.
    const victim = work.path('victim');
    writeFileSync(victim, 'victim');
    const link = work.path('.out2.img.bbbbbbbbbbbb.lowtide-partial');
    symlinkSync(victim, link);
    const r2 = await restore({ repository: repo, backup: id, target: work.path('out2.img') });
    expect(r2.removedPartials).toEqual([]);
    expect(existsSync(link)).toBe(true);
    expect(readFileSync(victim, 'utf8')).toBe('victim');
  });

  it('refuses a symbolic link to a regular file, saying so', async () => {
    const { repo, id } = await oneBackup('linkfile');
    const file = work.path('existing.img');
    writeFileSync(file, 'x');
    const link = work.path('link-to-file');
    symlinkSync(file, link);
    const err = await restore({ repository: repo, backup: id, target: link, force: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNSUPPORTED' });
    expect((err as Error).message).toContain('not a block device');
    expect(readFileSync(file, 'utf8')).toBe('x');
  });

  it.skipIf(skipReason('restore through a symbolic link to a block device', loopUnavailableReason()))(
    'accepts a symbolic link to a block device (as in /dev/disk/by-id)',
    async () => {
      const { repo, id, src } = await oneBackup('linkdev');
      const backing = work.path('backing.img');
      writeFileSync(backing, Buffer.alloc(2 * MiB));
      const dev = attachLoop(backing, { readOnly: false });
      try {
        const link = work.path('by-id-link');
        symlinkSync(dev, link);
        const r = await restore({ repository: repo, backup: id, target: link });
        expect(r.targetKind).toBe('block');
        expect(r.target).toBe(link);
      } finally {
        detachLoop(dev);
      }
      expect(cmp(src, backing)).toBe(true);
    },
  );
});
