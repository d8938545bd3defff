/**
 * The repository readers' fuzzer (fuzz/repo-readers.ts) in the test suite:
 * every committed finding (fuzz/regressions/repo_readers/<target>-*) is read
 * again and must end in a result or a LowtideError, and a short run with a
 * fixed seed keeps the fuzzer itself working.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSeeds, mutate, Rng, runCase, TARGETS, type Seeds } from '../../fuzz/repo-readers.js';

const regressions = join(import.meta.dirname, '../../fuzz/regressions/repo_readers');

describe('repository readers under mutation', () => {
  let seeds: Seeds;
  beforeAll(async () => {
    seeds = await makeSeeds();
  });
  afterAll(() => rmSync(seeds.dir, { recursive: true, force: true }));

  it('the seeds read cleanly', async () => {
    for (const target of TARGETS)
      expect(await runCase(seeds, target, Buffer.concat([Buffer.from([1]), seedOf(target)]))).toBe('ok');
  });

  for (const name of readdirSync(regressions).sort()) {
    const target = TARGETS.find((t) => name.startsWith(`${t}-`));
    if (!target) continue;
    it(`regression ${name}: a result or a LowtideError`, async () => {
      await expect(runCase(seeds, target, readFileSync(join(regressions, name)))).resolves.toMatch(/^(ok|error)$/);
    });
  }

  it('40 mutations of each file, seed 1', async () => {
    const rng = new Rng(1);
    const seen = { ok: 0, error: 0 };
    for (const target of TARGETS) {
      for (let i = 0; i < 40; i++) seen[await runCase(seeds, target, await mutate(rng, seeds, target))]++;
    }
    expect(seen.error).toBeGreaterThan(0);
  }, 120_000);

  function seedOf(target: (typeof TARGETS)[number]): Buffer {
    return target === 'manifest' ? seeds.manifest : target === 'index' ? seeds.index : seeds.catalog;
  }
});
