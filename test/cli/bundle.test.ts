// The installed `lowtide` command is one bundled file (rolldown.config.mjs):
// it must run on its own, next to nothing of dist/ but itself, and find the
// addon and package.json from wherever the package lives.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cmp } from '../helpers/cli.js';
import { TempDir, patternBytes, writeSparseFile } from '../helpers/tmp.js';

const root = join(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
};
const tmp = new TempDir();
afterAll(() => tmp.remove());

/** A copy of the package holding only package.json, the bundle and the addon. */
function bareCopy(): string {
  const dir = tmp.file('pkg');
  mkdirSync(join(dir, 'dist', 'bin'), { recursive: true });
  copyFileSync(join(root, 'package.json'), join(dir, 'package.json'));
  copyFileSync(join(root, pkg.bin.lowtide!), join(dir, pkg.bin.lowtide!));
  if (existsSync(join(root, 'build', 'Release', 'lowtide.node'))) {
    mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
    copyFileSync(join(root, 'build', 'Release', 'lowtide.node'), join(dir, 'build', 'Release', 'lowtide.node'));
  } else {
    cpSync(join(root, 'prebuilds'), join(dir, 'prebuilds'), { recursive: true });
  }
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

describe('the lowtide command', () => {
  it('is the bundle that package.json names, with a node shebang', () => {
    expect(pkg.bin.lowtide).toBe('./dist/bin/lowtide.cjs');
    const text = readFileSync(join(root, pkg.bin.lowtide), 'utf8');
    expect(text.startsWith('#!/usr/bin/env node\n')).toBe(true);
    // Plain ASCII (rolldown.config.mjs drops comments): V8 scans it as one-byte text.
    expect([...text].findIndex((c) => c.charCodeAt(0) > 0x7f)).toBe(-1);
  });

  it('runs from a copy of the package without the rest of dist/', () => {
    const dir = bareCopy();
    const cli = join(dir, pkg.bin.lowtide!);

    const v = spawnSync(process.execPath, [cli, '--version'], { encoding: 'utf8' });
    expect(v.stderr).toBe('');
    expect(v.stdout.trim()).toBe(pkg.version);

    // A job that needs the addon: found from the copy's package root.
    const src = tmp.file('src.img');
    writeSparseFile(src, 8 << 20, [{ offset: 4096, data: patternBytes(3 << 20, 5) }]);
    const out = tmp.file('out.img');
    const r = spawnSync(process.execPath, [cli, 'image', src, out, '--json', '--throttle', 'off'], {
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(cmp(src, out)).toBe(true);
  });
});
