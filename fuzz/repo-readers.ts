/**
 * A mutation fuzzer for the repository readers (lib/repo): manifests, chunk
 * index files and file catalogs. libFuzzer does not drive TypeScript, so this
 * one mutates valid files itself (bit flips, byte runs, truncation, splices,
 * and for JSON: huge numbers, wrong types, removed fields), seeded and
 * reproducible, and checks that every read ends in a result or a
 * LowtideError: no other exception, no hang, no memory blow-up.
 *
 * Used by fuzz/repo-readers.fuzz.ts (npm run fuzz) and by the regression
 * test (test/repo/fuzz-regressions.test.ts), which replays
 * fuzz/regressions/repo_readers/<target>-*.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LowtideError } from '../lib/errors.js';
import { backup, initRepository } from '../lib/index.js';
import { CatalogWriter, readCatalog } from '../lib/repo/catalog.js';
import { IndexLookup } from '../lib/repo/index-lookup.js';
import { openRepository } from '../lib/repo/repository.js';

export type Target = 'manifest' | 'index' | 'catalog';
export const TARGETS: readonly Target[] = ['manifest', 'index', 'catalog'];

/** A deterministic generator (mulberry32). */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
}

const HUGE: readonly unknown[] = [
  1e308,
  -1,
  -0.5,
  2 ** 53 + 2,
  2 ** 32,
  2 ** 31 - 1,
  4294967296 * 65536,
  Number.MAX_SAFE_INTEGER,
  0,
  0.1,
];
const WRONG: readonly unknown[] = [
  null,
  true,
  false,
  '',
  'x',
  '../../etc/passwd',
  [],
  {},
  [[1, 2]],
  { a: 1 },
  '\u0000',
];

/** A JSON document with one value somewhere replaced, removed or duplicated. */
function mutateJsonValue(rng: Rng, doc: unknown): unknown {
  // Collect the containers and keys in the document.
  const slots: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const visit = (x: unknown): void => {
    if (Array.isArray(x)) {
      x.forEach((v, i) => {
        slots.push({ parent: x, key: i });
        visit(v);
      });
    } else if (x !== null && typeof x === 'object') {
      for (const [k, v] of Object.entries(x)) {
        slots.push({ parent: x as Record<string, unknown>, key: k });
        visit(v);
      }
    }
  };
  visit(doc);
  if (slots.length === 0) return structuredClone(rng.pick(WRONG));
  const { parent, key } = rng.pick(slots);
  const get = (): unknown => (parent as Record<string | number, unknown>)[key];
  const set = (v: unknown): void => {
    (parent as Record<string | number, unknown>)[key] = v;
  };
  switch (rng.int(6)) {
    case 0:
      set(rng.pick(HUGE));
      break;
    case 1:
      set(structuredClone(rng.pick(WRONG)));
      break;
    case 2:
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
      break;
    case 3: {
      const v = get();
      if (typeof v === 'number') set(v + (rng.int(3) - 1) * (1 + rng.int(1 << 20)));
      else if (typeof v === 'string') set(v.slice(0, rng.int(v.length + 1)) + rng.pick(['/', '..', '\u0001', 'é', '']));
      else set(rng.pick(HUGE));
      break;
    }
    case 4: {
      const v = get();
      if (Array.isArray(v)) for (let i = rng.int(4); i >= 0; i--) v.push(structuredClone(v[0] ?? 0));
      else set([structuredClone(v)]);
      break;
    }
    default: {
      const v = get();
      if (typeof v === 'string') set(v.repeat(1 + rng.int(64)));
      else set(rng.pick(HUGE));
    }
  }
  return doc;
}

/** Byte-level mutations of `data`; `other` is a source of splices. */
export function mutateBytes(rng: Rng, data: Buffer, other: Buffer): Buffer {
  let b = Buffer.from(data);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = b.length === 0 ? 0 : rng.int(b.length);
    switch (rng.int(7)) {
      case 0: // bit flips
        for (let i = rng.int(8); i >= 0 && b.length > 0; i--) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 1: // a byte run
        b.fill(rng.pick([0, 0xff, 0x7f, 0x80, 0x20]), at, Math.min(b.length, at + 1 + rng.int(64)));
        break;
      case 2: // truncation
        b = b.subarray(0, at);
        break;
      case 3: {
        // a splice from the other input
        const from = other.length === 0 ? 0 : rng.int(other.length);
        const piece = other.subarray(from, from + 1 + rng.int(256));
        b = Buffer.concat([b.subarray(0, at), piece, b.subarray(at + (rng.int(2) === 0 ? piece.length : 0))]);
        break;
      }
      case 4: {
        // a huge little-endian number
        const n = Buffer.alloc(8);
        n.writeBigUInt64LE(rng.pick([2n ** 64n - 1n, 2n ** 53n + 1n, 2n ** 32n, 2n ** 31n, 0n]));
        n.copy(b, at);
        break;
      }
      case 5: // a duplicated range
        b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + rng.int(512)), b.subarray(at)]);
        break;
      default: // a random byte
        if (b.length > 0) b[at] = rng.int(256);
    }
  }
  return b;
}

/** A mutated JSON text: structure-aware most of the time, raw bytes otherwise. */
function mutateJsonText(rng: Rng, text: Buffer, other: Buffer): Buffer {
  if (rng.int(4) === 0) return mutateBytes(rng, text, other);
  let doc: unknown;
  try {
    doc = JSON.parse(text.toString('utf8'));
  } catch {
    return mutateBytes(rng, text, other);
  }
  for (let i = rng.int(3); i >= 0; i--) doc = mutateJsonValue(rng, doc);
  return Buffer.from(JSON.stringify(doc));
}

/** A small valid repository: one backup of a file, and a catalog to mutate. */
export interface Seeds {
  dir: string;
  repo: string;
  id: string;
  manifest: Buffer;
  index: Buffer;
  /** The catalog's JSON lines (header first), before framing. */
  catalogLines: Buffer;
  catalog: Buffer;
}

const ENTRY = {
  partition: 1,
  path: '/DIR/FILE.TXT',
  shortName: 'FILE.TXT',
  unsafeName: "8.3 name escaped as A%2FB: it holds '/'",
  size: 70000,
  isDirectory: false,
  attributes: 32,
  modified: '2026-01-01T00:00:00.000Z',
  extents: [
    [65536, 4096],
    [131072, 65904],
  ],
};

export async function makeSeeds(): Promise<Seeds> {
  const dir = mkdtempSync(join(tmpdir(), 'lowtide-fuzz-repo-'));
  const src = join(dir, 'source.img');
  const data = Buffer.alloc(5 * 65536 + 1000);
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(Math.imul(i, 2654435761) >>> 0, i);
  writeFileSync(src, data);
  const repo = join(dir, 'repo');
  await initRepository(repo, { chunkSize: 65536 });
  const b = await backup({ source: src, repository: repo });
  const backups = join(repo, 'backups');
  const lines =
    JSON.stringify({ format: 'lowtide-catalog', version: 1 }) +
    '\n' +
    [
      { ...ENTRY, path: '/DIR', shortName: 'DIR', size: 0, isDirectory: true, extents: [] },
      ENTRY,
      { ...ENTRY, path: '/DIR/EMPTY', extents: [], size: 0 },
    ]
      .map((e) => JSON.stringify(e))
      .join('\n') +
    '\n';
  const seeds: Seeds = {
    dir,
    repo,
    id: b.id,
    manifest: readFileSync(join(backups, `${b.id}.json`)),
    index: readFileSync(join(backups, `${b.id}.index`)),
    catalogLines: Buffer.from(lines),
    catalog: Buffer.alloc(0),
  };
  seeds.catalog = await frameCatalog(seeds, Buffer.from(lines));
  return seeds;
}

/** `lines` (a catalog's plain text) as catalog frames, as CatalogWriter writes them. */
async function frameCatalog(seeds: Seeds, lines: Buffer): Promise<Buffer> {
  const tmp = join(seeds.dir, 'frames');
  mkdirSync(tmp, { recursive: true });
  const w = await CatalogWriter.create(tmp, 1);
  // CatalogWriter writes its own header: give it the lines after ours, or all when ours is damaged.
  const nl = lines.indexOf(10);
  const body =
    lines.subarray(0, nl).toString() === seeds.catalogLines.subarray(0, nl).toString() ? lines.subarray(nl + 1) : lines;
  await w.addFrame(body, 1);
  const out = join(tmp, 'out.catalog');
  await w.finish(out);
  const framed = readFileSync(out);
  rmSync(out);
  return framed;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * One fuzz input for `target`, made from the seeds by `rng`: the bytes of
 * the file, and for index and catalog whether the manifest's digest is
 * updated to match (so the checks behind the digest are reached).
 */
export async function mutate(rng: Rng, seeds: Seeds, target: Target): Promise<Buffer> {
  let bytes: Buffer;
  if (target === 'manifest') bytes = mutateJsonText(rng, seeds.manifest, seeds.catalogLines);
  else if (target === 'index') bytes = mutateBytes(rng, seeds.index, seeds.manifest);
  else if (rng.int(2) === 0) bytes = mutateBytes(rng, seeds.catalog, seeds.index);
  else {
    // Mutate one line's JSON, then frame the text again (the reader's JSON and schema checks).
    const lines = seeds.catalogLines.toString().split('\n');
    const i = rng.int(lines.length);
    lines[i] = mutateJsonText(rng, Buffer.from(lines[i]!), seeds.manifest).toString();
    bytes = await frameCatalog(seeds, Buffer.from(lines.join('\n')));
  }
  // First byte of the stored input: whether the digest in the manifest follows the file.
  return Buffer.concat([Buffer.from([rng.int(4) === 0 ? 0 : 1]), bytes]);
}

/** Longest a single read may take; past it the case is a hang. */
export const CASE_TIMEOUT_MS = 10_000;
/** Most the heap may grow in a single read. */
export const CASE_HEAP_BYTES = 512 * 1024 * 1024;

/**
 * Reads one input (as mutate() made it) with the reader of `target`.
 * Resolves to 'ok' or 'error' (a LowtideError); rejects with a description
 * of anything else: another exception, a hang, too much memory.
 */
export async function runCase(seeds: Seeds, target: Target, input: Buffer): Promise<'ok' | 'error'> {
  const followDigest = input[0] === 1;
  const bytes = input.subarray(1);
  const backups = join(seeds.repo, 'backups');
  const id = seeds.id;
  // Restore the seed files, then put the input in place.
  writeFileSync(join(backups, `${id}.json`), seeds.manifest);
  writeFileSync(join(backups, `${id}.index`), seeds.index);
  rmSync(join(backups, `${id}.catalog`), { force: true });
  const manifest = JSON.parse(seeds.manifest.toString()) as Record<string, unknown>;
  if (target === 'manifest') writeFileSync(join(backups, `${id}.json`), bytes);
  if (target === 'index') {
    writeFileSync(join(backups, `${id}.index`), bytes);
    if (followDigest) manifest.index = { ...(manifest.index as object), sha256: sha256(bytes) };
    writeFileSync(join(backups, `${id}.json`), JSON.stringify(manifest));
  }
  const catalogPath = join(backups, `${id}.catalog`);
  if (target === 'catalog') writeFileSync(catalogPath, bytes);

  const heapBefore = process.memoryUsage().heapUsed;
  let peak = heapBefore;
  const sample = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().heapUsed);
  }, 5);
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: no result after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
  });
  const read = async (): Promise<void> => {
    const repo = await openRepository(seeds.repo);
    if (target === 'manifest') {
      await repo.listBackups();
      await repo.readManifest(id);
      return;
    }
    const m = await repo.readManifest(id);
    if (target === 'index') {
      const lookup = await IndexLookup.open(repo, m);
      try {
        for (let i = 0; i < m.chunkCount; i++) await lookup.entry(i);
      } finally {
        await lookup.close();
      }
      const reader = await repo.openIndex(m);
      try {
        for (let i = 0; i < m.chunkCount; i++) await reader.entry(i);
        await reader.verify();
      } finally {
        await reader.close();
      }
      return;
    }
    for await (const e of readCatalog(catalogPath, followDigest ? sha256(bytes) : 'f'.repeat(64), m.size)) {
      if (typeof e.path !== 'string') throw new Error('a catalog entry without a path');
    }
  };
  try {
    await Promise.race([read(), hang]);
    return 'ok';
  } catch (err) {
    if (err instanceof LowtideError) return 'error';
    throw new Error(
      `${target}: not a LowtideError: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
    clearInterval(sample);
    peak = Math.max(peak, process.memoryUsage().heapUsed);
    if (peak - heapBefore > CASE_HEAP_BYTES)
      // eslint-disable-next-line no-unsafe-finally
      throw new Error(`${target}: the heap grew by ${Math.round((peak - heapBefore) / 2 ** 20)} MiB in one read`);
  }
}
