/**
 * Restore as a qcow2 image (restore --format qcow2): the guest disk of a
 * qcow2 backup (data and compressed clusters, zero clusters, a backing
 * file) and a raw disk's backup, each restored to a qcow2 file that
 * `qemu-img check` finds clean and `qemu-img compare` finds equal to the
 * source; clusters of zeros stay unallocated.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository, restore } from '../../lib/index.js';
import { lowtide } from '../helpers/cli.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { patternBytes, TempDir, writeSparseFile } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const reason = ['qemu-img', 'qemu-io'].every(hasCommand) ? undefined : 'qemu-img or qemu-io is missing (qemu-utils)';

function run(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], cwd });
}

/** qemu-img check: exit 0 and no leaks or errors. */
function check(img: string): void {
  const r = spawnSync('qemu-img', ['check', '--output=json', img], { encoding: 'utf8' });
  expect(r.status, r.stderr + r.stdout).toBe(0);
  const c = JSON.parse(r.stdout) as { 'check-errors': number; leaks?: number; corruptions?: number };
  expect(c['check-errors']).toBe(0);
  expect(c.leaks ?? 0).toBe(0);
  expect(c.corruptions ?? 0).toBe(0);
}

function compare(a: string, aFormat: string, b: string): boolean {
  return spawnSync('qemu-img', ['compare', '-q', '-f', aFormat, '-F', 'qcow2', a, b]).status === 0;
}

describe.skipIf(skipReason('restore as qcow2', reason))('restore --format qcow2', () => {
  const tmp = new TempDir('lowtide-restore-qcow2-');
  afterAll(() => tmp.remove());

  it('a qcow2 chain backed up and restored as qcow2: clean and equal; zeros unallocated', async () => {
    const dir = tmp.path;
    // 40 MiB plus a piece: the last cluster and chunk are short.
    const size = 40 * MiB + 12 * 1024;
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', `${dir}/base.qcow2`, String(size)]);
    run('qemu-io', [
      '-f',
      'qcow2',
      '-c',
      `write -P 7 ${2 * MiB} ${3 * MiB}`,
      '-c',
      `write -P 9 ${30 * MiB} 65536`,
      `${dir}/base.qcow2`,
    ]);
    run('qemu-img', ['convert', '-q', '-c', '-O', 'qcow2', `${dir}/base.qcow2`, `${dir}/basec.qcow2`]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'basec.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`], dir);
    run('qemu-io', [
      '-f',
      'qcow2',
      '-c',
      `write -P 11 ${MiB - 4096} ${MiB + 8192}`,
      '-c',
      `write -z ${2 * MiB} ${MiB}`,
      '-c',
      `write -P 13 ${size - 12 * 1024} ${12 * 1024}`,
      `${dir}/top.qcow2`,
    ]);
    const repo = tmp.file('repo');
    await initRepository(repo, { chunkSize: 1 << 20 });
    const b = await backup({ source: `${dir}/top.qcow2`, format: 'qcow2', repository: repo });
    const out = tmp.file('restored.qcow2');
    const r = await restore({ repository: repo, backup: b.id, target: out, format: 'qcow2' });
    expect(r.format).toBe('qcow2');
    check(out);
    expect(compare(`${dir}/top.qcow2`, 'qcow2', out)).toBe(true);
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', out])) as {
      'virtual-size': number;
      'cluster-size': number;
      'backing-filename'?: string;
    };
    expect(info['virtual-size']).toBe(size);
    expect(info['cluster-size']).toBe(65536);
    expect(info['backing-filename']).toBeUndefined();
    // Allocated: the clusters with data, not the zeros.
    const map = JSON.parse(run('qemu-img', ['map', '--output=json', out])) as { length: number; data: boolean }[];
    const allocated = map.filter((m) => m.data).reduce((n, m) => n + m.length, 0);
    expect(allocated).toBeGreaterThan(0);
    expect(allocated).toBeLessThanOrEqual(6 * MiB + 64 * 1024);
  }, 60_000);

  it('a raw disk from the command line; an unknown format is a usage error', () => {
    const raw = tmp.file('disk.raw');
    // 1.5 GiB, sparse: data in three L2 tables' ranges (512 MiB each).
    writeSparseFile(raw, 1536 * MiB, [
      { offset: 0, data: patternBytes(MiB, 3) },
      { offset: 10 * MiB + 65536, data: patternBytes(3 * MiB, 4) },
      { offset: 1100 * MiB + 65536, data: patternBytes(MiB, 5) },
    ]);
    const repo = tmp.file('repo-raw');
    expect(lowtide(['init', repo, '--chunk-size', '256K']).status).toBe(0);
    const b = lowtide(['backup', raw, '--repo', repo, '--json']);
    expect(b.status, b.stderr).toBe(0);
    const out = tmp.file('raw.qcow2');
    const r = lowtide(['restore', 'latest', out, '--repo', repo, '--format', 'qcow2', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { format: string }).format).toBe('qcow2');
    check(out);
    expect(compare(raw, 'raw', out)).toBe(true);
    const map = JSON.parse(run('qemu-img', ['map', '--output=json', out])) as { length: number; data: boolean }[];
    expect(map.filter((m) => m.data).reduce((n, m) => n + m.length, 0)).toBe(5 * MiB);
    const bad = lowtide(['restore', 'latest', tmp.file('x'), '--repo', repo, '--format', 'vmdk']);
    expect(bad.status).toBe(2);
  }, 60_000);
});
