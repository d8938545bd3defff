/** The package loads with require() as well as with import (Node >= 20.19 requires ES modules). */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..');

describe('require("lowtide")', () => {
  it('gives the same API as import, and it works', () => {
    const script = `
      const m = require(${JSON.stringify(root)});
      m.openSource('/proc/self/exe').then(async (s) => {
        console.log(JSON.stringify({ backup: typeof m.backup, error: typeof m.LowtideError, size: s.size > 0 }));
        await s.close();
      });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ backup: 'function', error: 'function', size: true });
  });
});
