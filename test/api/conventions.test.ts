/**
 * The public API's conventions: jobs take one options object, wrong types
 * reject with a LowtideError that names the option, renamed options say
 * their new name, an abort is an AbortError, a Repository does its own
 * list/verify/prune/files/extract, and `lowtide/advanced` holds the parts.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as api from '../../lib/index.js';
import * as advanced from '../../lib/advanced.js';
import { LowtideError } from '../../lib/index.js';
import { writeFileSync } from 'node:fs';
import { hasCommand } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';

/** A file of pattern bytes in `dir`. */
function patternFile(dir: TempDir, name: string, length: number, seed: number): string {
  const p = dir.file(name);
  writeFileSync(p, patternBytes(length, seed));
  return p;
}

/** What a call rejects with (or throws synchronously). */
async function failure(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (err) {
    return err;
  }
  return undefined;
}

const jobs: [string, (o: unknown) => unknown][] = [
  ['imageSource', (o) => api.imageSource(o as never)],
  ['backup', (o) => api.backup(o as never)],
  ['restore', (o) => api.restore(o as never)],
  ['backupMany', (o) => api.backupMany(o as never)],
  ['verifyRepository', (o) => api.verifyRepository(o as never)],
  ['pruneRepository', (o) => api.pruneRepository(o as never)],
  ['listFiles', (o) => api.listFiles(o as never)],
  ['extractPath', (o) => api.extractPath(o as never)],
  ['listBackupFiles', (o) => api.listBackupFiles(o as never)],
  ['extractFromBackup', (o) => api.extractFromBackup(o as never)],
];

const openers: [string, (p: unknown, o?: unknown) => unknown][] = [
  ['openSource', (p, o) => api.openSource(p as never, o as never)],
  ['openRepository', (p) => api.openRepository(p as never)],
  ['initRepository', (p, o) => api.initRepository(p as never, o as never)],
  ['describeDisk', (p) => api.describeDisk(p as never)],
];

describe('the API rejects wrong types with a LowtideError naming the option', () => {
  for (const [name, call] of jobs) {
    it(`${name}: no options, a number, an empty object, a field of the wrong type`, async () => {
      for (const bad of [42, 'x', null, [1]]) {
        const e = await failure(() => call(bad));
        expect(e, `${name}(${String(bad)})`).toBeInstanceOf(LowtideError);
        expect((e as LowtideError).code).toBe('INVALID_ARGUMENT');
        expect((e as LowtideError).message).toMatch(/^options: expected an object/);
      }
      // No options, or none of the required fields: the first required field is named.
      for (const none of [undefined, {}]) {
        const empty = await failure(() => call(none));
        expect(empty, `${name}(${JSON.stringify(none)})`).toBeInstanceOf(LowtideError);
        expect((empty as LowtideError).code).toBe('INVALID_ARGUMENT');
        expect((empty as LowtideError).message).toMatch(
          /^(source|sources|repository|output|backup|path|dest|keepLast)\b/,
        );
      }
      const typed = await failure(() =>
        call({
          source: 7,
          sources: [7],
          repository: 7,
          output: 7,
          backup: 7,
          target: 7,
          path: 7,
          dest: 7,
          keepLast: 1,
        }),
      );
      expect(typed, `${name}(fields of the wrong type)`).toBeInstanceOf(LowtideError);
      expect((typed as LowtideError).message).toMatch(/expected/);
    });
  }

  for (const [name, call] of openers) {
    it(`${name}: a path that is not a string`, async () => {
      for (const bad of [undefined, 42, {}, null]) {
        const e = await failure(() => call(bad));
        expect(e, `${name}(${JSON.stringify(bad)})`).toBeInstanceOf(LowtideError);
        expect((e as LowtideError).code).toBe('INVALID_ARGUMENT');
      }
    });
  }

  it('a throttle option under its old name says its new one', async () => {
    const tmp = new TempDir();
    const src = patternFile(tmp, 'src.bin', 1 << 20, 1);
    for (const [was, now] of [
      ['latencyTarget', 'latencyTargetMs'],
      ['rateLimit', 'rateLimitBytesPerSecond'],
      ['admissionLimit', 'admissionLimitMs'],
    ] as const) {
      const e = await failure(() => api.imageSource({ source: src, output: tmp.file('o.img'), [was]: 5 } as never));
      expect(e).toBeInstanceOf(LowtideError);
      expect((e as LowtideError).message).toBe(`${was}: this option is now called ${now}`);
    }
    // A bad rate names the option the caller passed, not an internal one.
    const e = await failure(() =>
      api.imageSource({ source: src, output: tmp.file('o.img'), rateLimitBytesPerSecond: -1 }),
    );
    expect((e as LowtideError).message).toMatch(/^rateLimitBytesPerSecond: /);
    tmp.remove();
  });

  it("an abort rejects with name 'AbortError' and code ABORTED", async () => {
    const tmp = new TempDir();
    const src = patternFile(tmp, 'src.bin', 8 << 20, 2);
    const e = await failure(() =>
      api.imageSource({ source: src, output: tmp.file('o.img'), throttle: 'off', signal: AbortSignal.abort() }),
    );
    expect(e).toBeInstanceOf(LowtideError);
    expect(e).toMatchObject({ name: 'AbortError', code: 'ABORTED' });
    expect(new LowtideError('NOT_FOUND', 'x').name).toBe('LowtideError');
    tmp.remove();
  });
});

describe('entry points', () => {
  it('lowtide has the jobs, the repository and the errors; lowtide/advanced the parts', () => {
    for (const n of ['imageSource', 'backup', 'restore', 'backupMany', 'openSource', 'Repository', 'LowtideError'])
      expect(api).toHaveProperty(n);
    for (const n of ['createController', 'JobThrottle', 'LatencyHistogram', 'BlockReader', 'openVolume', 'planImage'])
      expect(advanced).toHaveProperty(n);
    // The parts are not in the main entry point.
    for (const n of ['createController', 'JobThrottle', 'LatencyHistogram', 'mergeExtents', 'planImage'])
      expect(api).not.toHaveProperty(n);
  });
});

describe('a Repository does its own list, verify, prune, files and extract', () => {
  const tools = hasCommand('mkfs.fat') && hasCommand('mcopy');
  if (!tools) console.warn('[skip] Repository methods: needs mkfs.fat and mcopy (dosfstools, mtools)');
  it.skipIf(!tools)('each method equals the function it stands for', async () => {
    const tmp = new TempDir();
    const img = tmp.file('fat.img');
    execFileSync('mkfs.fat', ['-C', '-F', '16', img, String(32 * 1024)], { stdio: 'ignore' });
    const file = patternFile(tmp, 'hello.txt', 100_000, 3);
    execFileSync('mcopy', ['-i', img, file, '::HELLO.TXT']);
    const repo = await api.initRepository(tmp.file('repo'));
    const a = await api.backup({ source: img, repository: repo, throttle: 'off' });
    await api.backup({ source: img, repository: repo, throttle: 'off' });
    const { backups } = await repo.list();
    expect(backups.map((b) => b.id)).toContain(a.id);
    expect((await repo.verify()).ok).toBe(true);
    const files = await repo.files({ backup: a.id });
    expect(files.map((f) => f.path)).toEqual(['/HELLO.TXT']);
    const x = await repo.extract({ backup: a.id, path: '/HELLO.TXT', dest: tmp.file('out.txt') });
    expect(x.bytes).toBe(100_000);
    const p = await repo.prune({ keepLast: 1 });
    expect(p.removed).toEqual([a.id]);
    tmp.remove();
  });
});
