/**
 * Tampered repositories. Each case changes one thing in a copy of a small
 * repository (a manifest, an index, a catalog, the lock, tmp/, the chunk
 * store) and runs every operation on it through the public API: list, verify,
 * restore, files, extract, prune and backup. Each either works or fails with
 * a LowtideError whose code is asserted and whose message names the backup or
 * file; none hangs; and a sentinel directory beside the repository, which the
 * tampered repository points into, is byte-for-byte unchanged afterwards.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backup,
  extractFromBackup,
  initRepository,
  listBackupFiles,
  LowtideError,
  openRepository,
  pruneRepository,
  restore,
  verifyRepository,
  type ErrorCode,
  type PruneOptions,
} from '../../lib/index.js';
import { CatalogWriter } from '../../lib/repo/catalog.js';
import { CLI, cmp, lowtide } from '../helpers/cli.js';
import { TempDir, patternBytes, writeSparseFile } from '../helpers/tmp.js';

const KiB = 1024;
const CHUNK = 64 * KiB;
const SIZE = 1024 * KiB + 1000; // the last chunk is short
const HELLO = Buffer.from('hello from inside the image\n');
const INNER = patternBytes(3000, 9);

const tmp = new TempDir('lowtide-hostile-');
afterAll(() => tmp.remove());

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed`);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

interface CatalogLine {
  partition: number;
  path: string;
  shortName: string;
  size: number;
  isDirectory: boolean;
  attributes: number;
  modified: string;
  extents: [number, number][];
}

const CATALOG: CatalogLine[] = [
  {
    partition: 0,
    path: '/HELLO.TXT',
    shortName: 'HELLO.TXT',
    size: HELLO.length,
    isDirectory: false,
    attributes: 0x20,
    modified: '2026-01-02T03:04:06.000Z',
    extents: [[0x10000, HELLO.length]],
  },
  {
    partition: 0,
    path: '/DIR',
    shortName: 'DIR',
    size: 0,
    isDirectory: true,
    attributes: 0x10,
    modified: '2026-01-02T03:04:06.000Z',
    extents: [],
  },
  {
    partition: 0,
    path: '/DIR/INNER.BIN',
    shortName: 'INNER.BIN',
    size: INNER.length,
    isDirectory: false,
    attributes: 0x20,
    modified: '2026-01-02T03:04:06.000Z',
    extents: [
      [0x20000, 1000],
      [0x30000, 2000],
    ],
  },
];

/** Writes a catalog of `lines` after its header (through the library's writer) to `path`; returns its digest and entry count. */
async function writeCatalog(
  repoPath: string,
  path: string,
  lines: unknown[],
): Promise<{ sha256: string; entries: number }> {
  const w = await CatalogWriter.create(join(repoPath, 'tmp'), 3);
  await w.addFrame(
    Buffer.from(lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l)) + '\n').join('')),
    lines.length,
  );
  return { sha256: await w.finish(path), entries: w.entries };
}

function manifestPath(repo: string, id: string): string {
  return join(repo, 'backups', `${id}.json`);
}
function readManifestJson(repo: string, id: string): Record<string, unknown> {
  return JSON.parse(readFileSync(manifestPath(repo, id), 'utf8')) as Record<string, unknown>;
}
function writeManifestJson(repo: string, id: string, m: unknown): void {
  writeFileSync(manifestPath(repo, id), JSON.stringify(m, null, 2) + '\n');
}

/** Gives backup `id` a catalog of `lines`. */
async function setCatalog(repo: string, id: string, lines: unknown[]): Promise<void> {
  const c = await writeCatalog(repo, join(repo, 'backups', `${id}.catalog`), lines);
  writeManifestJson(repo, id, { ...readManifestJson(repo, id), catalog: { file: `${id}.catalog`, ...c } });
}

// --- the template repository: backups A (older) and B of one source, both with a catalog ---

let template: string;
let source: string;
let A: string;
let B: string;

function writeSource(path: string, version: number): void {
  const pieces = [
    { offset: 0, data: patternBytes(0x10000, 1) },
    { offset: 0x10000, data: HELLO },
    { offset: 0x20000, data: INNER.subarray(0, 1000) },
    { offset: 0x30000, data: INNER.subarray(1000) },
    { offset: 0x40000, data: patternBytes(5 * CHUNK, 2) },
    { offset: 0xc0000, data: patternBytes(2 * CHUNK, 100 + version) },
    { offset: SIZE - 1000, data: patternBytes(1000, 3) },
  ];
  writeSparseFile(path, SIZE, pieces);
}

beforeAll(async () => {
  template = tmp.file('template');
  source = tmp.file('source.img');
  await initRepository(template, { chunkSize: CHUNK });
  writeSource(source, 0);
  A = (await backup({ source, repository: template })).id;
  writeSource(source, 1);
  B = (await backup({ source, repository: template })).id;
  await setCatalog(template, A, CATALOG);
  await setCatalog(template, B, CATALOG);
}, 60_000);

// --- the sentinel: what must not change ---

type Snapshot = Record<string, string>;

/** Everything under `dir`: kind, mode, size, content digest, link target, mtime. */
function snapshot(dir: string): Snapshot {
  const out: Snapshot = {};
  const walk = (d: string, rel: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      const base = `mode ${st.mode.toString(8)} mtime ${st.mtimeMs} nlink ${st.nlink}`;
      if (st.isSymbolicLink()) out[r] = `link -> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${base}`;
        walk(p, r);
      } else if (st.isFile()) out[r] = `file ${st.size} ${sha256(readFileSync(p))} ${base}`;
      else out[r] = `other ${base}`;
    }
  };
  walk(dir, '');
  return out;
}

interface Case {
  repo: string;
  sentinel: string;
  out: string;
  /** The backup the mutation is about, and the other one. */
  id: string;
  other: string;
}

/** A copy of the template with an empty sentinel directory and an output directory beside it. */
function newCase(name: string, target: 'A' | 'B'): Case {
  const dir = tmp.file(name.replace(/[^\w]+/g, '-'));
  mkdirSync(dir);
  const repo = join(dir, 'repo');
  cpSync(template, repo, { recursive: true });
  const sentinel = join(dir, 'sentinel');
  mkdirSync(sentinel);
  writeFileSync(join(sentinel, 'victim.txt'), 'SENTINEL: must never change\n');
  mkdirSync(join(sentinel, 'sub'));
  writeFileSync(join(sentinel, 'sub', 'keep.bin'), patternBytes(5000, 77));
  // Names lowtide would remove in its own directories: a temporary file, a chunk.
  writeFileSync(join(sentinel, 'w.1.000000000000.tmp'), 'looks like a temporary file\n');
  writeFileSync(join(sentinel, 'f'.repeat(64)), 'looks like a chunk no backup needs\n');
  mkfifo(join(sentinel, 'pipe'));
  const out = join(dir, 'out');
  mkdirSync(out);
  return { repo, sentinel, out, id: target === 'A' ? A : B, other: target === 'A' ? B : A };
}

// --- operations and expected outcomes ---

const OPS = ['list', 'verify', 'restore', 'files', 'extract', 'prune', 'backup'] as const;
type Op = (typeof OPS)[number];

/** Works; or fails with `code`, the message containing `names` ($id: the target backup's id). */
type Outcome = 'ok' | { code: ErrorCode; names: string };

interface Mutation {
  name: string;
  target: 'A' | 'B';
  apply(c: Case): void | Promise<void>;
  /** list: the target's manifest is reported damaged (REPO_CORRUPT unless given), the other backup still listed. */
  listDamaged?: ErrorCode;
  /** verify: not ok, and the target is named among the damaged manifests or backups. */
  verifyBad?: boolean;
  prune?: PruneOptions;
  expect: Partial<Record<Op, Outcome>>;
  /** Extra checks after all operations. */
  after?(c: Case): void;
}

const TIMEOUT_MS = 15_000;

async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not finish within ${TIMEOUT_MS} ms (it hangs)`)),
      TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

async function run(op: Op, c: Case, m: Mutation): Promise<unknown> {
  switch (op) {
    case 'list':
      return (await openRepository(c.repo)).listBackups();
    case 'verify':
      return verifyRepository(await openRepository(c.repo));
    case 'restore':
      return restore({ repository: c.repo, backup: c.id, target: join(c.out, 'restored.img') });
    case 'files':
      return listBackupFiles(c.repo, c.id);
    case 'extract':
      return extractFromBackup(c.repo, c.id, '/', join(c.out, 'extracted'));
    case 'prune':
      return pruneRepository(await openRepository(c.repo), m.prune ?? { keepLast: 1 });
    case 'backup':
      return backup({ source, repository: c.repo });
  }
}

function checkOutcome(
  op: Op,
  outcome: Outcome,
  result: { value?: unknown; error?: unknown },
  c: Case,
  m: Mutation,
): void {
  const label = `${m.name}: ${op}`;
  if (outcome === 'ok') {
    if (result.error !== undefined)
      throw new Error(`${label}: expected success, got ${String((result.error as Error).stack ?? result.error)}`);
  } else {
    expect(result.error, `${label}: expected ${outcome.code}`).toBeInstanceOf(LowtideError);
    const e = result.error as LowtideError;
    expect(`${e.code}: ${e.message}`, label).toContain(`${outcome.code}: `);
    expect(e.message, label).toContain(outcome.names.replace('$id', c.id));
  }
  if (result.error !== undefined) return;
  if (op === 'list') {
    const { backups, damaged } = result.value as Awaited<
      ReturnType<Awaited<ReturnType<typeof openRepository>>['listBackups']>
    >;
    if (m.listDamaged) {
      const d = damaged.find((x) => x.id === c.id);
      expect(d, `${label}: ${c.id} reported damaged`).toBeDefined();
      expect(d!.error.code, label).toBe(m.listDamaged);
      expect(d!.error.message, label).toContain(c.id);
      expect(
        backups.map((b) => b.id),
        label,
      ).not.toContain(c.id);
    }
    if (m.name !== 'backups/ is a symbolic link')
      expect(
        backups.map((b) => b.id),
        `${label}: the other backup is still listed`,
      ).toContain(c.other);
  }
  if (op === 'verify') {
    const r = result.value as Awaited<ReturnType<typeof verifyRepository>>;
    if (m.verifyBad) {
      expect(r.ok, label).toBe(false);
      const named = [
        ...r.damagedBackups,
        ...r.damagedManifests.map((d) => `${d.id} ${d.message}`),
        ...r.problems.flatMap((p) => p.backups),
      ].join('\n');
      expect(named, label).toContain(c.id);
    }
  }
  if (op === 'restore' && m.expect.restore === 'ok') {
    // Restored to the version it was made from: compare against a restore of the untouched template.
    expect(readFileSync(join(c.out, 'restored.img')).length, label).toBe(SIZE);
  }
  if (op === 'files' && m.expect.files === 'ok') {
    const paths = (result.value as { path: string }[]).map((f) => f.path).sort();
    expect(paths, label).toEqual(CATALOG.map((e) => e.path).sort());
  }
  if (op === 'extract' && m.expect.extract === 'ok') {
    expect(readFileSync(join(c.out, 'extracted', 'HELLO.TXT')).equals(HELLO), label).toBe(true);
    expect(readFileSync(join(c.out, 'extracted', 'DIR', 'INNER.BIN')).equals(INNER), label).toBe(true);
  }
}

/** Outcomes of a broken manifest of A: A is reported and refused, B and everything else work. */
function manifestDamaged(names = '$id', code: ErrorCode = 'REPO_CORRUPT'): Partial<Record<Op, Outcome>> {
  return {
    list: 'ok',
    verify: 'ok',
    restore: { code, names },
    files: { code, names },
    extract: { code, names },
    prune: 'ok',
    backup: 'ok',
  };
}

/** Outcomes of a broken chunk index of B (the newest: kept by prune, the next backup's parent). */
function indexDamaged(): Partial<Record<Op, Outcome>> {
  const e = { code: 'REPO_CORRUPT' as const, names: '$id' };
  return { list: 'ok', verify: 'ok', restore: e, files: 'ok', extract: e, prune: e, backup: e };
}

/** Outcomes of a broken catalog of B: only files and extract fail. */
function catalogDamaged(names: string): Partial<Record<Op, Outcome>> {
  const e = { code: 'REPO_CORRUPT' as const, names };
  return { list: 'ok', verify: 'ok', restore: 'ok', files: e, extract: e, prune: 'ok', backup: 'ok' };
}

/** Outcomes of a broken part that only writers use (lock, tmp/): readers work, writers refuse. */
function writersRefuse(names: string): Partial<Record<Op, Outcome>> {
  const e = { code: 'REPO_CORRUPT' as const, names };
  return { list: 'ok', verify: 'ok', restore: 'ok', files: 'ok', extract: 'ok', prune: e, backup: e };
}

function editManifest(c: Case, edit: (m: Record<string, unknown>) => unknown): void {
  writeManifestJson(c.repo, c.id, edit(readManifestJson(c.repo, c.id)));
}

/** locks/write.lock, removed so that the caller can put something else there. */
function lockFile(c: Case): string {
  const path = join(c.repo, 'locks', 'write.lock');
  rmSync(path, { force: true });
  return path;
}

function chunkOf(c: Case, id: string): string {
  const index = readFileSync(join(c.repo, 'backups', `${id}.index`));
  for (let o = 32; o < index.length; o += 32) {
    const e = index.subarray(o, o + 32);
    if (e.some((b) => b !== 0)) return e.toString('hex');
  }
  throw new Error('no stored chunk');
}

const MUTATIONS: Mutation[] = [
  // --- manifests ---
  {
    name: 'manifest without plan',
    target: 'A',
    apply: (c) => editManifest(c, (m) => ({ ...m, plan: undefined })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest with a created time that is not a time (prune --keep-daily)',
    target: 'A',
    apply: (c) => editManifest(c, (m) => ({ ...m, created: 'yesterday' })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    prune: { keepDaily: 1 },
    expect: manifestDamaged(),
  },
  {
    name: 'manifest with wrong types (size a string, stats missing)',
    target: 'A',
    apply: (c) => editManifest(c, (m) => ({ ...m, size: '1 MiB', stats: null })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest whose chunkCount does not match its size',
    target: 'A',
    apply: (c) => editManifest(c, (m) => ({ ...m, chunkCount: 3 })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest naming another backup',
    target: 'A',
    apply: (c) => editManifest(c, (m) => ({ ...m, id: B })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest that is not JSON',
    target: 'A',
    apply: (c) => writeFileSync(manifestPath(c.repo, c.id), '{"format": "lowtide-backup", '),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest that is JSON null',
    target: 'A',
    apply: (c) => writeFileSync(manifestPath(c.repo, c.id), 'null\n'),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest of 600 MiB',
    target: 'A',
    apply: (c) => truncateSync(manifestPath(c.repo, c.id), 600 * 1024 * 1024),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'index.file is ../../sentinel/victim.txt (prune removes the backup)',
    target: 'A',
    apply: (c) =>
      editManifest(c, (m) => ({ ...m, index: { ...(m.index as object), file: '../../sentinel/victim.txt' } })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'index.file is an absolute path outside the repository',
    target: 'A',
    apply: (c) =>
      editManifest(c, (m) => ({ ...m, index: { ...(m.index as object), file: join(c.sentinel, 'victim.txt') } })),
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'catalog.file is ../../sentinel/catalog, a catalog listing SECRET.TXT',
    target: 'A',
    apply: async (c) => {
      const outside = join(c.sentinel, 'catalog');
      const cat = await writeCatalog(c.repo, outside, [{ ...CATALOG[0], path: '/SECRET.TXT' }]);
      editManifest(c, (m) => ({ ...m, catalog: { file: '../../sentinel/catalog', ...cat } }));
    },
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest is a symbolic link to a manifest outside',
    target: 'A',
    apply: (c) => {
      const outside = join(c.sentinel, 'manifest.json');
      renameSync(manifestPath(c.repo, c.id), outside);
      symlinkSync(outside, manifestPath(c.repo, c.id));
    },
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest is a FIFO',
    target: 'A',
    apply: (c) => {
      unlinkSync(manifestPath(c.repo, c.id));
      mkfifo(manifestPath(c.repo, c.id));
    },
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest is a symbolic link to a FIFO outside',
    target: 'A',
    apply: (c) => {
      unlinkSync(manifestPath(c.repo, c.id));
      symlinkSync(join(c.sentinel, 'pipe'), manifestPath(c.repo, c.id));
    },
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'manifest is a directory',
    target: 'A',
    apply: (c) => {
      unlinkSync(manifestPath(c.repo, c.id));
      mkdirSync(manifestPath(c.repo, c.id));
    },
    listDamaged: 'REPO_CORRUPT',
    verifyBad: true,
    expect: manifestDamaged(),
  },
  {
    name: 'a .json in backups/ that is not named like a backup',
    target: 'B',
    apply: (c) => writeFileSync(join(c.repo, 'backups', '..hidden.json'), '{}'),
    expect: { list: 'ok', verify: 'ok', restore: 'ok', files: 'ok', extract: 'ok', prune: 'ok', backup: 'ok' },
    after: (c) => expect(readFileSync(join(c.repo, 'backups', '..hidden.json'), 'utf8')).toBe('{}'),
  },
  // --- chunk indexes (of B: kept by prune, the parent of the next backup) ---
  {
    name: 'index is a FIFO',
    target: 'B',
    apply: (c) => {
      unlinkSync(join(c.repo, 'backups', `${c.id}.index`));
      mkfifo(join(c.repo, 'backups', `${c.id}.index`));
    },
    verifyBad: true,
    expect: indexDamaged(),
  },
  {
    name: 'index is a symbolic link to a FIFO outside',
    target: 'B',
    apply: (c) => {
      unlinkSync(join(c.repo, 'backups', `${c.id}.index`));
      symlinkSync(join(c.sentinel, 'pipe'), join(c.repo, 'backups', `${c.id}.index`));
    },
    verifyBad: true,
    expect: indexDamaged(),
  },
  {
    name: 'index is a symbolic link to its own content outside',
    target: 'B',
    apply: (c) => {
      const outside = join(c.sentinel, 'index');
      renameSync(join(c.repo, 'backups', `${c.id}.index`), outside);
      symlinkSync(outside, join(c.repo, 'backups', `${c.id}.index`));
    },
    verifyBad: true,
    expect: indexDamaged(),
  },
  {
    name: 'index is a directory',
    target: 'B',
    apply: (c) => {
      unlinkSync(join(c.repo, 'backups', `${c.id}.index`));
      mkdirSync(join(c.repo, 'backups', `${c.id}.index`));
    },
    verifyBad: true,
    expect: indexDamaged(),
  },
  {
    name: 'index with bytes past its last entry',
    target: 'B',
    apply: (c) => writeFileSync(join(c.repo, 'backups', `${c.id}.index`), Buffer.alloc(32), { flag: 'a' }),
    verifyBad: true,
    expect: indexDamaged(),
  },
  {
    name: 'index truncated',
    target: 'B',
    apply: (c) => truncateSync(join(c.repo, 'backups', `${c.id}.index`), 100),
    verifyBad: true,
    expect: indexDamaged(),
  },
  // --- catalogs (of B) ---
  {
    name: 'catalog is a symbolic link to a catalog outside listing SECRET.TXT',
    target: 'B',
    apply: async (c) => {
      const inside = join(c.repo, 'backups', `${c.id}.catalog`);
      const outside = join(c.sentinel, 'catalog');
      const cat = await writeCatalog(c.repo, outside, [{ ...CATALOG[0], path: '/SECRET.TXT' }]);
      unlinkSync(inside);
      symlinkSync(outside, inside);
      editManifest(c, (m) => ({ ...m, catalog: { file: `${c.id}.catalog`, ...cat } }));
    },
    expect: catalogDamaged('$id.catalog'),
  },
  {
    name: 'catalog is a FIFO',
    target: 'B',
    apply: (c) => {
      unlinkSync(join(c.repo, 'backups', `${c.id}.catalog`));
      mkfifo(join(c.repo, 'backups', `${c.id}.catalog`));
    },
    expect: catalogDamaged('$id.catalog'),
  },
  {
    name: 'catalog entry with a ../ path',
    target: 'B',
    apply: (c) => setCatalog(c.repo, c.id, [...CATALOG, { ...CATALOG[0], path: '/DIR/../../../sentinel/victim.txt' }]),
    expect: catalogDamaged('$id.catalog'),
  },
  {
    name: 'catalog entry whose extent runs past the image',
    target: 'B',
    apply: (c) => setCatalog(c.repo, c.id, [{ ...CATALOG[0], size: 4000, extents: [[SIZE - 1000, 4000]] }]),
    expect: catalogDamaged('$id.catalog'),
  },
  {
    name: 'catalog line that is not JSON, and one of wrong types',
    target: 'B',
    apply: (c) => setCatalog(c.repo, c.id, [{ ...CATALOG[0], size: '28', extents: 'all' }, '{"partition":']),
    expect: catalogDamaged('$id.catalog'),
  },
  // --- the writer lock ---
  {
    name: 'write.lock is a symbolic link to a file outside',
    target: 'B',
    apply: (c) => symlinkSync(join(c.sentinel, 'victim.txt'), lockFile(c)),
    expect: writersRefuse('write.lock'),
  },
  {
    name: 'write.lock is a dangling symbolic link to a path outside',
    target: 'B',
    apply: (c) => symlinkSync(join(c.sentinel, 'created-by-lowtide'), lockFile(c)),
    expect: writersRefuse('write.lock'),
  },
  {
    name: 'write.lock is a hard link to a file outside',
    target: 'B',
    apply: (c) => linkSync(join(c.sentinel, 'victim.txt'), lockFile(c)),
    expect: writersRefuse('write.lock'),
  },
  {
    name: 'write.lock is a FIFO',
    target: 'B',
    apply: (c) => mkfifo(lockFile(c)),
    expect: writersRefuse('write.lock'),
  },
  {
    name: 'locks/ is a symbolic link to a directory outside',
    target: 'B',
    apply: (c) => {
      rmSync(join(c.repo, 'locks'), { recursive: true });
      symlinkSync(join(c.sentinel, 'sub'), join(c.repo, 'locks'));
    },
    expect: writersRefuse('repo/locks'),
  },
  // --- tmp/ ---
  {
    name: 'tmp/ is a symbolic link to a directory outside',
    target: 'B',
    apply: (c) => {
      rmSync(join(c.repo, 'tmp'), { recursive: true });
      symlinkSync(c.sentinel, join(c.repo, 'tmp'));
    },
    expect: writersRefuse('tmp/ of the repository'),
  },
  {
    name: 'tmp/ is a file',
    target: 'B',
    apply: (c) => {
      rmSync(join(c.repo, 'tmp'), { recursive: true });
      writeFileSync(join(c.repo, 'tmp'), 'not a directory');
    },
    expect: writersRefuse('tmp/ of the repository'),
  },
  {
    name: 'tmp/ holds a symbolic link named like a temporary file, to a file outside',
    target: 'B',
    apply: (c) => symlinkSync(join(c.sentinel, 'victim.txt'), join(c.repo, 'tmp', 'w.1.0123456789ab.tmp')),
    expect: { list: 'ok', verify: 'ok', restore: 'ok', files: 'ok', extract: 'ok', prune: 'ok', backup: 'ok' },
  },
  // --- the chunk store and the repository's directories ---
  {
    name: 'a chunk directory is a symbolic link to a directory outside',
    target: 'B',
    apply: (c) => {
      const hex = chunkOf(c, c.id);
      const dir = join(c.repo, 'chunks', hex.slice(0, 2));
      const outside = join(c.sentinel, 'chunkdir');
      renameSync(dir, outside);
      // A file the sweep of prune would remove, were it to look there.
      writeFileSync(join(outside, hex.slice(0, 2) + 'e'.repeat(62)), 'not a chunk of this repository');
      symlinkSync(outside, dir);
    },
    verifyBad: true,
    expect: {
      list: 'ok',
      verify: 'ok',
      restore: { code: 'CHUNK_CORRUPT', names: 'chunks/' },
      files: 'ok',
      extract: 'ok',
      prune: { code: 'REPO_CORRUPT', names: 'chunks/' },
      backup: { code: 'REPO_CORRUPT', names: 'chunks/' },
    },
  },
  {
    name: 'a chunk is a symbolic link to a FIFO outside',
    target: 'B',
    apply: (c) => {
      const hex = chunkOf(c, c.id);
      const path = join(c.repo, 'chunks', hex.slice(0, 2), hex);
      unlinkSync(path);
      symlinkSync(join(c.sentinel, 'pipe'), path);
    },
    verifyBad: true,
    expect: {
      list: 'ok',
      verify: 'ok',
      restore: { code: 'CHUNK_CORRUPT', names: 'chunk ' },
      files: 'ok',
      extract: 'ok',
      prune: 'ok',
      backup: 'ok',
    },
  },
  {
    name: 'backups/ is a symbolic link',
    target: 'B',
    apply: (c) => {
      const outside = join(c.sentinel, 'backups');
      renameSync(join(c.repo, 'backups'), outside);
      symlinkSync(outside, join(c.repo, 'backups'));
    },
    expect: Object.fromEntries(OPS.map((op) => [op, { code: 'REPO_CORRUPT', names: 'backups' }])),
  },
  {
    name: 'config.json is a FIFO',
    target: 'B',
    apply: (c) => {
      unlinkSync(join(c.repo, 'config.json'));
      mkfifo(join(c.repo, 'config.json'));
    },
    expect: Object.fromEntries(OPS.map((op) => [op, { code: 'REPO_FORMAT', names: 'config.json' }])),
  },
];

describe('a tampered repository: clear errors, no hang, nothing outside read, written or deleted', () => {
  it.each(MUTATIONS.map((m) => [m.name, m] as const))(
    '%s',
    async (_name, m) => {
      const c = newCase(m.name, m.target);
      await m.apply(c);
      const before = snapshot(c.sentinel);
      for (const op of OPS) {
        const outcome = m.expect[op] ?? 'ok';
        let result: { value?: unknown; error?: unknown };
        try {
          result = { value: await within(Promise.resolve(run(op, c, m)), `${m.name}: ${op}`) };
        } catch (error) {
          result = { error };
        }
        checkOutcome(op, outcome, result, c, m);
        expect(snapshot(c.sentinel), `${m.name}: ${op} left the sentinel directory unchanged`).toEqual(before);
      }
      // Nothing was written beside the repository except into out/.
      expect(readdirSync(join(c.repo, '..')).sort()).toEqual(['out', 'repo', 'sentinel']);
      m.after?.(c);
    },
    120_000,
  );
});

describe('one damaged backup is reported; the others still list, verify and prune (CLI)', () => {
  it('list: a manifest without plan is one DAMAGED line naming what is wrong; the other backup is listed', () => {
    const c = newCase('cli list', 'A');
    editManifest(c, (m) => ({ ...m, plan: undefined }));
    const r = lowtide(['list', '--repo', c.repo]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${B}  \\S+ +\\S+ \\S+  used +${source.replace(/[/.]/g, '\\$&')}$`, 'm'));
    expect(r.stdout).toContain(`${A}  DAMAGED: ${manifestPath(c.repo, A)}: damaged manifest: plan is missing\n`);
    const json = JSON.parse(lowtide(['list', '--repo', c.repo, '--json']).stdout) as {
      backups: { id: string }[];
      damaged: { id: string; error: { code: string; message: string } }[];
    };
    expect(json.backups.map((b) => b.id)).toEqual([B]);
    expect(json.damaged).toEqual([
      {
        id: A,
        error: { code: 'REPO_CORRUPT', message: `${manifestPath(c.repo, A)}: damaged manifest: plan is missing` },
      },
    ]);
  });

  it('prune --keep-daily with a created time that is not a time: the damaged backup and its chunks are kept, with a warning', async () => {
    const c = newCase('cli prune daily', 'A');
    editManifest(c, (m) => ({ ...m, created: '2026-02-30T25:00:00Z' }));
    const r = lowtide(['prune', '--repo', c.repo, '--keep-daily', '1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      `lowtide: warning: kept backup ${A} and its chunks: ${manifestPath(c.repo, A)}: damaged manifest: created: expected an ISO 8601 UTC time`,
    );
    const report = JSON.parse(r.stdout) as { kept: string[]; removed: string[]; damaged: { id: string }[] };
    expect(report).toMatchObject({ kept: [B], removed: [], damaged: [{ id: A }] });
    // Every chunk of A is still there: repairing its manifest restores it.
    editManifest(c, (m) => ({ ...m, created: new Date().toISOString() }));
    expect((await verifyRepository(await openRepository(c.repo))).ok).toBe(true);
    await restore({ repository: c.repo, backup: A, target: join(c.out, 'a.img') });
    writeSource(join(c.out, 'a-source.img'), 0);
    expect(cmp(join(c.out, 'a.img'), join(c.out, 'a-source.img'))).toBe(true);
  });

  it('prune refuses, removing nothing, when a damaged backup has no readable chunk index either', async () => {
    const c = newCase('prune both damaged', 'A');
    editManifest(c, (m) => ({ ...m, plan: undefined }));
    writeFileSync(join(c.repo, 'backups', `${A}.index`), 'not an index');
    const before = snapshot(c.repo);
    const e = await pruneRepository(await openRepository(c.repo), { keepLast: 1 }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(LowtideError);
    expect((e as LowtideError).code).toBe('REPO_CORRUPT');
    expect((e as LowtideError).message).toContain(`cannot prune: the manifest of backup ${A} is unreadable`);
    expect((e as LowtideError).message).toContain('nothing is removed');
    const after = snapshot(c.repo);
    delete before['locks/write.lock'];
    delete after['locks/write.lock'];
    expect(after).toEqual(before);
  });

  it('verify with a FIFO as an index: exit 3 (damage) at once, naming the backup', () => {
    const c = newCase('cli verify fifo', 'B');
    unlinkSync(join(c.repo, 'backups', `${B}.index`));
    mkfifo(join(c.repo, 'backups', `${B}.index`));
    // SIGKILL at the timeout: a process stuck in open(2) of a FIFO does not end on SIGTERM.
    const r = spawnSync(process.execPath, [CLI, 'verify', '--repo', c.repo], {
      encoding: 'utf8',
      timeout: 30_000,
      killSignal: 'SIGKILL',
    });
    expect(r.signal).toBeNull();
    expect(r.status).toBe(3);
    expect(r.stdout).toContain(
      `damaged backup ${B}: the chunk index of backup ${B} (${join(c.repo, 'backups', `${B}.index`)}) is a FIFO, not a regular file\n`,
    );
  });

  it('backup with write.lock a symbolic link to a file outside: refused, the file unchanged', () => {
    const c = newCase('cli backup lock link', 'B');
    symlinkSync(join(c.sentinel, 'victim.txt'), lockFile(c));
    const before = snapshot(c.sentinel);
    const r = lowtide(['backup', source, '--repo', c.repo]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(
      `[REPO_CORRUPT]: the writer lock ${join(c.repo, 'locks', 'write.lock')} is a symbolic link`,
    );
    expect(snapshot(c.sentinel)).toEqual(before);
  });
});

describe('temporary files a killed writer left', () => {
  /** What a writer killed while storing a chunk and writing its index leaves in tmp/. */
  function leaveStaleFiles(repo: string): number {
    writeFileSync(join(repo, 'tmp', 'w.4194301.0123456789ab.tmp'), patternBytes(70_000, 5));
    writeFileSync(join(repo, 'tmp', 'index.4194301.ba9876543210.tmp'), Buffer.alloc(96));
    return 70_000 + 96;
  }

  it('the next backup removes them and says so; nothing else in tmp/ or outside is touched', async () => {
    const c = newCase('stale tmp', 'B');
    const bytes = leaveStaleFiles(c.repo);
    // Not lowtide's: a directory, a file of another name, a link to a file outside.
    mkdirSync(join(c.repo, 'tmp', 'keep'));
    writeFileSync(join(c.repo, 'tmp', 'notes.txt'), 'mine');
    symlinkSync(join(c.sentinel, 'victim.txt'), join(c.repo, 'tmp', 'w.1.aaaaaaaaaaaa.tmp'));
    const before = snapshot(c.sentinel);
    const r = await backup({ source, repository: c.repo });
    expect(r.staleFilesRemoved).toEqual({ files: 2, bytes });
    expect(readdirSync(join(c.repo, 'tmp')).sort()).toEqual(['keep', 'notes.txt', 'w.1.aaaaaaaaaaaa.tmp']);
    expect(snapshot(c.sentinel)).toEqual(before);
    // A clean run leaves nothing, and the next one has nothing to say.
    expect((await backup({ source, repository: c.repo })).staleFilesRemoved).toEqual({ files: 0, bytes: 0 });
  });

  it('prune and the CLI report them too', async () => {
    const c = newCase('stale tmp prune', 'B');
    const bytes = leaveStaleFiles(c.repo);
    const p = await pruneRepository(await openRepository(c.repo), { keepLast: 5 });
    expect(p.staleFilesRemoved).toEqual({ files: 2, bytes });
    expect(readdirSync(join(c.repo, 'tmp'))).toEqual([]);
    leaveStaleFiles(c.repo);
    const r = lowtide(['backup', source, '--repo', c.repo]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      'lowtide: warning: removed 2 temporary files (68.5 KiB) that an unfinished earlier run left in the repository\n',
    );
    expect(readdirSync(join(c.repo, 'tmp'))).toEqual([]);
  });
});
