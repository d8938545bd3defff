import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backupMany, initRepository, restore, type BackupJobEvent } from '../../lib/index.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const tmp = new TempDir();
afterAll(() => tmp.remove());

function sources(n: number, tag: string): string[] {
  return Array.from({ length: n }, (_, i) => {
    const p = tmp.file(`${tag}-${i}.img`);
    writeFileSync(p, patternBytes(24 * MiB, 100 + i));
    return p;
  });
}

/** Largest number of jobs running at once, from the event stream. */
function maxConcurrent(events: BackupJobEvent[]): number {
  let now = 0;
  let max = 0;
  for (const e of events) {
    if (e.kind === 'start') max = Math.max(max, ++now);
    if (e.kind === 'done' || e.kind === 'failed') now--;
  }
  return max;
}

describe('several sources', () => {
  it('an unreachable admission limit starts one job at a time; every backup restores exactly', async () => {
    const repo = tmp.file('repo-adm');
    await initRepository(repo);
    const srcs = sources(3, 'adm');
    const events: BackupJobEvent[] = [];
    const r = await backupMany({
      sources: srcs,
      repository: repo,
      parallel: 3,
      admissionLimitMs: 0.000_001,
      throttle: 'off',
      onJob: (e) => events.push(e),
    });
    expect(r.results.every((x) => x.ok)).toBe(true);
    expect(r.admissionWaits).toBeGreaterThanOrEqual(1);
    expect(maxConcurrent(events)).toBe(1);
    for (const [i, x] of r.results.entries()) {
      const out = tmp.file(`adm-out-${i}.img`);
      await restore({ repository: repo, backup: x.id!, target: out });
      expect(cmp(srcs[i]!, out)).toBe(true);
    }
  });

  it('without an admission limit, --parallel 2 runs two at once (CLI)', () => {
    const repo = tmp.file('repo-par');
    expect(lowtide(['init', repo]).status).toBe(0);
    const srcs = sources(3, 'par');
    const r = lowtide(['backup', ...srcs, '--repo', repo, '--parallel', '2', '--throttle', 'off']);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(r.stderr).toMatch(/\(2 running\)/);
    const list = lowtide(['list', '--repo', repo, '--json']);
    expect((JSON.parse(list.stdout) as { backups: unknown[] }).backups).toHaveLength(3);
  });
});
