/**
 * The repository readers' fuzzer run (npm run fuzz): replays
 * fuzz/regressions/repo_readers/, then mutates the seeds for FUZZ_SECONDS
 * (default 30) seconds in all, split between the targets. FUZZ_SEED (an
 * integer) repeats a run; each finding's input is saved under
 * build/fuzz/artifacts/repo_readers-<target>-* and fails the run.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { makeSeeds, mutate, Rng, runCase, TARGETS, type Target } from './repo-readers.js';

const root = join(import.meta.dirname, '..');
const regressions = join(root, 'fuzz/regressions/repo_readers');
const artifacts = join(root, 'build/fuzz/artifacts');

it('repository readers: every mutated file read ends in a result or a LowtideError', async () => {
  const seconds = Number(process.env.FUZZ_SECONDS ?? 30);
  const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
  if (!Number.isFinite(seconds) || seconds < 0)
    throw new Error(`FUZZ_SECONDS: expected seconds, got ${process.env.FUZZ_SECONDS}`);
  if (!Number.isInteger(seed)) throw new Error(`FUZZ_SEED: expected an integer, got ${process.env.FUZZ_SEED}`);
  const seeds = await makeSeeds();
  const findings: string[] = [];
  try {
    for (const name of readdirSync(regressions).sort()) {
      const target = TARGETS.find((t) => name.startsWith(`${t}-`));
      if (!target) continue;
      await runCase(seeds, target, readFileSync(join(regressions, name))).catch((err: unknown) => {
        findings.push(`regression ${name}: ${String(err)}`);
      });
    }
    console.log(`repo_readers: seed ${seed} (FUZZ_SEED=${seed} repeats this run), ${seconds} s`);
    const rng = new Rng(seed);
    for (const target of TARGETS) {
      const until = Date.now() + (seconds * 1000) / TARGETS.length;
      const counts = { ok: 0, error: 0 };
      let n = 0;
      while (Date.now() < until && findings.length < 5) {
        const input = await mutate(rng, seeds, target as Target);
        n++;
        try {
          counts[await runCase(seeds, target, input)]++;
        } catch (err) {
          mkdirSync(artifacts, { recursive: true });
          const file = join(artifacts, `repo_readers-${target}-${seed}-${n}`);
          writeFileSync(file, input);
          findings.push(`${String(err)}\n  input: ${file}`);
        }
      }
      console.log(
        `repo_readers ${target}: ${n} inputs, ${counts.ok} read, ${counts.error} refused with a LowtideError`,
      );
    }
  } finally {
    rmSync(seeds.dir, { recursive: true, force: true });
  }
  expect(findings).toEqual([]);
});
