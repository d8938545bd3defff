// `npm pack --json` is read by scripts: the build it runs (prepare) must not
// print to stdout.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { describe, expect, it } from 'vitest';
import { skipReason } from '../helpers/system.js';

const root = join(import.meta.dirname, '../..');
const prebuilds = join(root, 'prebuilds', 'linux-x64');

describe('npm pack --json', () => {
  it('prints only JSON on stdout, the build output going to stderr', () => {
    // npm pack refuses to pack without the prebuilt addon (prepack).
    const none = !existsSync(prebuilds) || !readdirSync(prebuilds).some((f) => f.endsWith('.node'));
    if (skipReason('npm pack --dry-run --json', none ? 'no prebuilt addon: run npm run prebuild' : undefined)) return;
    const r = spawnSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8', timeout: 180_000 });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    expect(files).toContain('dist/bin/lowtide.cjs');
    // Every source map points at sources the package ships; nothing test-only is in it.
    const shipped = new Set(files);
    const maps = files.filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(10);
    for (const m of maps) {
      const { sources } = JSON.parse(readFileSync(join(root, m), 'utf8')) as { sources: string[] };
      for (const s of sources) expect(shipped, `${m} → ${s}`).toContain(normalize(join(dirname(m), s)));
    }
    expect(files.filter((f) => /simulated-device|\.test\./.test(f))).toEqual([]);
  }, 200_000);
});
