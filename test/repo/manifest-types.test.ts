/**
 * A manifest's plan of partitions and its throttle report are checked
 * against their schemas when read, and typed accordingly: a backup of a FAT
 * image reads back with its numbers; a manifest whose partition is not one
 * is damaged, named, and the other backups still list.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository, openRepository } from '../../lib/index.js';
import { hasCommand } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';

const tools = hasCommand('mkfs.fat');
if (!tools) console.warn('[skip] manifest types: needs mkfs.fat (dosfstools)');
const tmp = new TempDir();
afterAll(() => tmp.remove());

describe.skipIf(!tools)('manifest types', () => {
  it('partitions and the throttle report read back typed; a bad partition makes that manifest damaged', async () => {
    const img = tmp.file('fat.img');
    execFileSync('mkfs.fat', ['-C', '-F', '16', img, String(16 * 1024)], { stdio: 'ignore' });
    const path = tmp.file('repo');
    await initRepository(path);
    const a = await backup({ source: img, repository: path });
    const b = await backup({ source: img, repository: path, throttle: 'off' });
    const repo = await openRepository(path);
    const m = await repo.readManifest(a.id);
    const p = m.filesystems.partitions[0]!;
    expect(p.mode).toBe('used');
    expect(p.fat!.usedClusters).toBeGreaterThanOrEqual(0);
    expect(p.fat!.totalClusters).toBeGreaterThan(p.fat!.usedClusters);
    expect(m.throttle!.controller).toBe('canary');
    expect(m.throttle!.heldBackMs).toBeGreaterThanOrEqual(0);
    expect(m.throttle!.heldBackMs! / 1000).toBeLessThanOrEqual(m.timing.seconds + 0.01);
    // The rest of the report is kept as written.
    expect(m.throttle).toHaveProperty('probes');

    const file = join(path, 'backups', `${b.id}.json`);
    const raw = JSON.parse(readFileSync(file, 'utf8')) as { filesystems: { partitions: { mode: string }[] } };
    raw.filesystems.partitions[0]!.mode = 'sideways';
    writeFileSync(file, JSON.stringify(raw));
    await expect(repo.readManifest(b.id)).rejects.toMatchObject({ code: 'REPO_CORRUPT' });
    const listed = await repo.list();
    expect(listed.backups.map((x) => x.id)).toEqual([a.id]);
    expect(listed.damaged.map((d) => d.id)).toEqual([b.id]);
    expect(listed.damaged[0]!.error.message).toMatch(/filesystems\.partitions\.0\.mode/);
  });
});
