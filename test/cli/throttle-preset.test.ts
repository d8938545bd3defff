/** --throttle-preset classic: the classic threshold rule with its documented limits. */
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { lowtide } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'lowtide-preset-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const src = join(dir, 'a.img');
writeFileSync(src, randomFillSync(Buffer.alloc(4 << 20)));

describe('--throttle-preset classic', () => {
  it('runs threshold at 30 ms for an image and a backup of one source', () => {
    const img = lowtide(['image', src, join(dir, 'out.img'), '--throttle-preset', 'classic', '--json']);
    expect(img.status, img.stderr).toBe(0);
    expect(JSON.parse(img.stdout).throttle).toMatchObject({
      controller: 'threshold',
      target: { mode: 'fixed', ms: 30 },
    });
    const repo = join(dir, 'repo');
    expect(lowtide(['init', repo]).status).toBe(0);
    const b = lowtide(['backup', src, '--repo', repo, '--throttle-preset', 'classic', '--json']);
    expect(b.status, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout).throttle).toMatchObject({ controller: 'threshold', target: { ms: 30 } });
    // Several sources: the preset's admission limit applies (and is accepted).
    const many = lowtide(['backup', src, src, '--repo', repo, '--throttle-preset', 'classic', '--json']);
    expect(many.status, many.stderr).toBe(0);
  });

  it('an explicit --latency-target wins; another --throttle is an error that names both', () => {
    const img = lowtide([
      'image',
      src,
      join(dir, 'out2.img'),
      '--throttle-preset',
      'classic',
      '--latency-target',
      '12',
      '--json',
    ]);
    expect(img.status, img.stderr).toBe(0);
    expect(JSON.parse(img.stdout).throttle.target.ms).toBe(12);
    const bad = lowtide(['image', src, join(dir, 'out3.img'), '--throttle-preset', 'classic', '--throttle', 'parda']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(
      /--throttle-preset classic runs --throttle threshold; it cannot be combined with --throttle parda/,
    );
    const unknown = lowtide(['image', src, join(dir, 'out4.img'), '--throttle-preset', 'fast']);
    expect(unknown.status).toBe(2);
  });
});
