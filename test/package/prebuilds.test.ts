/**
 * The prebuilt addons in prebuilds/ (those present: `npm run prebuild` and
 * `npm run prebuild:arm64` make them): each is an ELF shared object for the
 * architecture its directory names, and needs no newer glibc than 2.34 and
 * no newer libstdc++ than GCC 12's (GLIBCXX_3.4.30), as the README says.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..');
const dir = join(root, 'prebuilds');
/** ELF e_machine of each architecture. */
const MACHINE: Record<string, number> = { x64: 62, arm64: 183 };

/** The highest version among the `NAME_a.b.c` strings in the binary (its symbol versions). */
function highest(bin: Buffer, name: string): number[] | undefined {
  const versions = [...bin.toString('latin1').matchAll(new RegExp(`${name}_(\\d+(?:\\.\\d+)+)`, 'g'))].map((m) =>
    m[1]!.split('.').map(Number),
  );
  const cmp = (a: number[], b: number[]): number => {
    for (let i = 0; i < Math.max(a.length, b.length); i++)
      if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
    return 0;
  };
  return versions.sort(cmp).at(-1);
}

const builds = existsSync(dir)
  ? readdirSync(dir).flatMap((d) =>
      readdirSync(join(dir, d))
        .filter((f) => f.endsWith('.node'))
        .map((f) => ({ target: d, file: join(dir, d, f) })),
    )
  : [];
if (builds.length === 0) console.warn('[skip] prebuilt addons: none in prebuilds/ (npm run prebuild makes them)');

describe('prebuilt addons', () => {
  for (const { target, file } of builds) {
    it(`${target}: the architecture it is named for, glibc <= 2.34, GLIBCXX <= 3.4.30`, () => {
      const bin = readFileSync(file);
      expect(bin.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
      expect(bin[4]).toBe(2); // 64-bit
      expect(bin.readUInt16LE(16)).toBe(3); // a shared object
      const arch = target.split('-')[1]!;
      expect(bin.readUInt16LE(18)).toBe(MACHINE[arch]);
      expect(highest(bin, 'GLIBC')!.slice(0, 2)).toSatisfy(([a, b]: number[]) => a! < 2 || (a === 2 && b! <= 34));
      const cxx = highest(bin, 'GLIBCXX');
      if (cxx) expect(cxx[0]! * 1e6 + cxx[1]! * 1e3 + (cxx[2] ?? 0)).toBeLessThanOrEqual(3_004_030);
    });
  }
});
