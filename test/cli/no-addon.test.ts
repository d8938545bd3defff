/**
 * Without a native build the package still imports: errors, the version and
 * pure helpers work, and the first call that needs the addon rejects with a
 * LowtideError (UNSUPPORTED) that says how to build it.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'lowtide-no-addon-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a package without its native addon', () => {
  it('imports, and reports the missing addon as UNSUPPORTED at first use', () => {
    // The built package without build/ or prebuilds/: what an install with
    // --ignore-scripts on a platform without a prebuild leaves.
    cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
    cpSync(join(root, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    const script = join(dir, 'check.mjs');
    writeFileSync(
      script,
      `
      const m = await import(${JSON.stringify(join(dir, 'dist', 'index.js'))});
      const a = await import(${JSON.stringify(join(dir, 'dist', 'advanced.js'))});
      const out = { version: m.version, helper: a.mergeExtents([{ offset: 0, length: 4 }, { offset: 4, length: 4 }]) };
      out.isError = new m.LowtideError('INVALID_ARGUMENT', 'x') instanceof Error;
      try {
        await m.openSource(${JSON.stringify(script)});
        out.opened = true;
      } catch (err) {
        out.error = { name: err.name, code: err.code, message: err.message, lowtide: err instanceof m.LowtideError };
      }
      console.log(JSON.stringify(out));
      `,
    );
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(out.helper).toEqual([{ offset: 0, length: 8 }]);
    expect(out.isError).toBe(true);
    expect(out.opened).toBeUndefined();
    expect(out.error).toMatchObject({ name: 'LowtideError', code: 'UNSUPPORTED', lowtide: true });
    expect(out.error.message).toMatch(/native addon is not available for linux-/);
    expect(out.error.message).toMatch(/npm rebuild lowtide/);
  });
});
