// `npm pack --json` is read by scripts: the build it runs (prepare) must not
// print to stdout.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
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
  }, 200_000);
});
