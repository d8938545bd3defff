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
  existsSync,
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
  backupMany,
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
/** The source's content when each backup was made. */
const contentOf = new Map<string, Buffer>();

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
  contentOf.set(A, readFileSync(source));
  writeSource(source, 1);
  B = (await backup({ source, repository: template })).id;
  contentOf.set(B, readFileSync(source));
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

/**
 * A copy of the template, and beside it an output directory and a sentinel
 * directory: files, a FIFO, and names lowtide removes in its own directories.
 */
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
  /** list: the target is reported damaged with this code, and not listed. */
  listDamaged?: ErrorCode;
  /** verify: not ok, and the target is named among the damaged manifests or backups. */
  verifyBad?: boolean;
  /** The retention rule (default: keep the last one, so prune would remove A). */
  prune?: PruneOptions;
  /** backup: the target is the parent and its index is damaged: the backup must say it read in full. */
  parentIndexBroken?: boolean;
  /** Operations not named here work. */
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
      return verifyRepository({ repository: await openRepository(c.repo) });
    case 'restore':
      return restore({ repository: c.repo, backup: c.id, target: join(c.out, 'restored.img') });
    case 'files':
      return listBackupFiles({ repository: c.repo, backup: c.id });
    case 'extract':
      return extractFromBackup({ repository: c.repo, backup: c.id, path: '/', dest: join(c.out, 'extracted') });
    case 'prune':
      return pruneRepository({ repository: await openRepository(c.repo), ...(m.prune ?? { keepLast: 1 }) });
    case 'backup':
      return backup({ source, repository: c.repo }).then((r) => {
        // A damaged parent index is no parent: the backup is read in full and says why.
        if (m.parentIndexBroken === true && r.fallback === undefined)
          throw new Error(`${m.name}: the backup built on the damaged index without a word`);
        return r;
      });
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
  if (op === 'restore') {
    // Exactly the version of the source the backup was made from.
    expect(readFileSync(join(c.out, 'restored.img')).equals(contentOf.get(c.id)!), label).toBe(true);
  }
  if (op === 'files') {
    const paths = (result.value as { path: string }[]).map((f) => f.path).sort();
    expect(paths, label).toEqual(CATALOG.map((e) => e.path).sort());
  }
  if (op === 'extract') {
    expect(readFileSync(join(c.out, 'extracted', 'HELLO.TXT')).equals(HELLO), label).toBe(true);
    expect(readFileSync(join(c.out, 'extracted', 'DIR', 'INNER.BIN')).equals(INNER), label).toBe(true);
  }
}

type Apply = (c: Case) => void | Promise<void>;
const OK: Partial<Record<Op, Outcome>> = {};

/** A's manifest broken: list reports A, restore, files and extract of A fail, everything else works. */
function brokenManifest(name: string, apply: Apply, more: Partial<Mutation> = {}): Mutation {
  const e = { code: 'REPO_CORRUPT' as const, names: '$id' };
  const expect = { restore: e, files: e, extract: e };
  return { name, target: 'A', apply, listDamaged: 'REPO_CORRUPT', verifyBad: true, expect, ...more };
}

/**
 * B's chunk index broken (the newest backup: kept by prune, the next backup's parent): its
 * readers fail; a backup is made in full without a parent, and says so.
 */
function brokenIndex(name: string, apply: Apply): Mutation {
  const e = { code: 'REPO_CORRUPT' as const, names: '$id' };
  return {
    name,
    target: 'B',
    apply,
    verifyBad: true,
    parentIndexBroken: true,
    expect: { restore: e, extract: e, prune: e },
  };
}

/** B's catalog broken: only files and extract fail. */
function brokenCatalog(name: string, apply: Apply): Mutation {
  const e = { code: 'REPO_CORRUPT' as const, names: '$id.catalog' };
  return { name, target: 'B', apply, expect: { files: e, extract: e } };
}

/** A part only writers use (lock, tmp/) broken: readers work, backup and prune refuse naming `names`. */
function writersRefuse(name: string, names: string, apply: Apply): Mutation {
  const e = { code: 'REPO_CORRUPT' as const, names };
  return { name, target: 'B', apply, expect: { prune: e, backup: e } };
}

/** Puts something else where `path` was: a FIFO, a directory, or a symbolic link to `link`. */
function replace(path: string, by: 'fifo' | 'directory' | { link: string }): void {
  rmSync(path, { recursive: true, force: true });
  if (by === 'fifo') mkfifo(path);
  else if (by === 'directory') mkdirSync(path);
  else symlinkSync(by.link, path);
}

/** Moves `path` into the sentinel directory (as `name`) and leaves a symbolic link to it in its place. */
function moveOutside(c: Case, path: string, name: string): string {
  const outside = join(c.sentinel, name);
  renameSync(path, outside);
  symlinkSync(outside, path);
  return outside;
}

function editManifest(c: Case, edit: (m: Record<string, unknown>) => unknown): void {
  writeManifestJson(c.repo, c.id, edit(readManifestJson(c.repo, c.id)));
}

const indexOf = (c: Case): string => join(c.repo, 'backups', `${c.id}.index`);
const catalogOf = (c: Case): string => join(c.repo, 'backups', `${c.id}.catalog`);
const lockFile = (c: Case): string => join(c.repo, 'locks', 'write.lock');
const pruneLockFile = (c: Case): string => join(c.repo, 'locks', 'prune.lock');
const LEASE = 'backup-0123456789abcdef.json';
const leaseFile = (c: Case): string => join(c.repo, 'locks', LEASE);

/** Something in the place of a backup lease: prune refuses (REPO_CORRUPT naming it), backups do not look. */
function badLease(name: string, apply: Apply): Mutation {
  return { name, target: 'B', apply, expect: { prune: { code: 'REPO_CORRUPT', names: LEASE } } };
}

function chunkOf(c: Case, id: string): string {
  const index = readFileSync(join(c.repo, 'backups', `${id}.index`));
  for (let o = 32; o < index.length; o += 32) {
    const e = index.subarray(o, o + 32);
    if (e.some((b) => b !== 0)) return e.toString('hex');
  }
  throw new Error('no stored chunk');
}

/** A catalog listing SECRET.TXT, written outside the repository: its content would show up if it were read. */
async function outsideCatalog(c: Case): Promise<{ path: string; sha256: string; entries: number }> {
  const path = join(c.sentinel, 'catalog');
  return { path, ...(await writeCatalog(c.repo, path, [{ ...CATALOG[0], path: '/SECRET.TXT' }])) };
}

const MUTATIONS: Mutation[] = [
  // --- manifests (of A: the older backup, which prune removes) ---
  brokenManifest('manifest without plan', (c) => editManifest(c, (m) => ({ ...m, plan: undefined }))),
  brokenManifest(
    'manifest with a created time that is not a time (prune --keep-daily)',
    (c) => editManifest(c, (m) => ({ ...m, created: 'yesterday' })),
    { prune: { keepDaily: 1 } },
  ),
  brokenManifest('manifest with wrong types (size a string, stats missing)', (c) =>
    editManifest(c, (m) => ({ ...m, size: '1 MiB', stats: null })),
  ),
  brokenManifest('manifest whose chunkCount does not match its size', (c) =>
    editManifest(c, (m) => ({ ...m, chunkCount: 3 })),
  ),
  brokenManifest('manifest naming another backup', (c) => editManifest(c, (m) => ({ ...m, id: B }))),
  brokenManifest('manifest that is not JSON', (c) =>
    writeFileSync(manifestPath(c.repo, c.id), '{"format": "lowtide-backup", '),
  ),
  brokenManifest('manifest that is JSON null', (c) => writeFileSync(manifestPath(c.repo, c.id), 'null\n')),
  brokenManifest('manifest of 600 MiB', (c) => truncateSync(manifestPath(c.repo, c.id), 600 * 1024 * 1024)),
  brokenManifest('index.file is ../../sentinel/victim.txt (prune removes the backup)', (c) =>
    editManifest(c, (m) => ({ ...m, index: { ...(m.index as object), file: '../../sentinel/victim.txt' } })),
  ),
  brokenManifest('index.file is an absolute path outside the repository', (c) =>
    editManifest(c, (m) => ({ ...m, index: { ...(m.index as object), file: join(c.sentinel, 'victim.txt') } })),
  ),
  brokenManifest('catalog.file is ../../sentinel/catalog, a catalog listing SECRET.TXT', async (c) => {
    const { path: _, ...cat } = await outsideCatalog(c);
    editManifest(c, (m) => ({ ...m, catalog: { ...cat, file: '../../sentinel/catalog' } }));
  }),
  brokenManifest('manifest is a symbolic link to a manifest outside', (c) => {
    moveOutside(c, manifestPath(c.repo, c.id), 'manifest.json');
  }),
  brokenManifest('manifest is a FIFO', (c) => replace(manifestPath(c.repo, c.id), 'fifo')),
  brokenManifest('manifest is a symbolic link to a FIFO outside', (c) =>
    replace(manifestPath(c.repo, c.id), { link: join(c.sentinel, 'pipe') }),
  ),
  brokenManifest('manifest is a directory', (c) => replace(manifestPath(c.repo, c.id), 'directory')),
  {
    name: 'a .json in backups/ that is not named like a backup',
    target: 'B',
    apply: (c) => writeFileSync(join(c.repo, 'backups', '..hidden.json'), '{}'),
    expect: OK,
    after: (c) => expect(readFileSync(join(c.repo, 'backups', '..hidden.json'), 'utf8')).toBe('{}'),
  },
  // --- chunk indexes ---
  brokenIndex('index is a FIFO', (c) => replace(indexOf(c), 'fifo')),
  brokenIndex('index is a symbolic link to a FIFO outside', (c) =>
    replace(indexOf(c), { link: join(c.sentinel, 'pipe') }),
  ),
  brokenIndex('index is a symbolic link to its own content outside', (c) => {
    moveOutside(c, indexOf(c), 'index');
  }),
  brokenIndex('index is a directory', (c) => replace(indexOf(c), 'directory')),
  brokenIndex('index with bytes past its last entry', (c) =>
    writeFileSync(indexOf(c), Buffer.alloc(32), { flag: 'a' }),
  ),
  brokenIndex('index truncated', (c) => truncateSync(indexOf(c), 100)),
  // --- catalogs ---
  brokenCatalog('catalog is a symbolic link to a catalog outside listing SECRET.TXT', async (c) => {
    const { path, ...cat } = await outsideCatalog(c);
    replace(catalogOf(c), { link: path });
    editManifest(c, (m) => ({ ...m, catalog: { ...cat, file: `${c.id}.catalog` } }));
  }),
  brokenCatalog('catalog is a FIFO', (c) => replace(catalogOf(c), 'fifo')),
  brokenCatalog('catalog entry with a ../ path', (c) =>
    setCatalog(c.repo, c.id, [...CATALOG, { ...CATALOG[0], path: '/DIR/../../../sentinel/victim.txt' }]),
  ),
  brokenCatalog('catalog entry whose extent runs past the image', (c) =>
    setCatalog(c.repo, c.id, [{ ...CATALOG[0], size: 4000, extents: [[SIZE - 1000, 4000]] }]),
  ),
  brokenCatalog('catalog line that is not JSON, and one of wrong types', (c) =>
    setCatalog(c.repo, c.id, [{ ...CATALOG[0], size: '28', extents: 'all' }, '{"partition":']),
  ),
  // --- the writer lock ---
  writersRefuse('write.lock is a symbolic link to a file outside', 'write.lock', (c) =>
    replace(lockFile(c), { link: join(c.sentinel, 'victim.txt') }),
  ),
  writersRefuse('write.lock is a dangling symbolic link to a path outside', 'write.lock', (c) =>
    replace(lockFile(c), { link: join(c.sentinel, 'created-by-lowtide') }),
  ),
  writersRefuse('write.lock is a hard link to a file outside', 'write.lock', (c) => {
    rmSync(lockFile(c), { force: true });
    linkSync(join(c.sentinel, 'victim.txt'), lockFile(c));
  }),
  writersRefuse('write.lock is a FIFO', 'write.lock', (c) => replace(lockFile(c), 'fifo')),
  writersRefuse('prune.lock is a symbolic link to a file outside', 'prune.lock', (c) =>
    replace(pruneLockFile(c), { link: join(c.sentinel, 'victim.txt') }),
  ),
  writersRefuse('prune.lock is a hard link to a file outside', 'prune.lock', (c) => {
    rmSync(pruneLockFile(c), { force: true });
    linkSync(join(c.sentinel, 'victim.txt'), pruneLockFile(c));
  }),
  writersRefuse('prune.lock is a FIFO', 'prune.lock', (c) => replace(pruneLockFile(c), 'fifo')),
  // --- backup leases (only prune reads them; backups never open another's) ---
  badLease('a backup lease that is a symbolic link to a file outside', (c) =>
    symlinkSync(join(c.sentinel, 'victim.txt'), leaseFile(c)),
  ),
  badLease('a backup lease that is a hard link to a file outside', (c) =>
    linkSync(join(c.sentinel, 'victim.txt'), leaseFile(c)),
  ),
  badLease('a backup lease that is a FIFO', (c) => mkfifo(leaseFile(c))),
  badLease('a backup lease that is a directory', (c) => mkdirSync(leaseFile(c))),
  {
    name: 'a stale backup lease (its backup died): prune removes it, nothing else in locks/',
    target: 'B',
    apply: (c) => {
      writeFileSync(leaseFile(c), '{"pid":1,"host":"gone","purpose":"lowtide backup","since":"2026-01-01T00:00:00Z"}');
      writeFileSync(join(c.repo, 'locks', 'backup-notes.json'), 'mine');
    },
    expect: OK,
    after: (c) => {
      expect(existsSync(leaseFile(c))).toBe(false);
      expect(readFileSync(join(c.repo, 'locks', 'backup-notes.json'), 'utf8')).toBe('mine');
    },
  },
  writersRefuse('locks/ is a symbolic link to a directory outside', 'repo/locks', (c) =>
    replace(join(c.repo, 'locks'), { link: join(c.sentinel, 'sub') }),
  ),
  // --- tmp/ ---
  writersRefuse('tmp/ is a symbolic link to a directory outside', 'tmp/ of the repository', (c) =>
    replace(join(c.repo, 'tmp'), { link: c.sentinel }),
  ),
  writersRefuse('tmp/ is a file', 'tmp/ of the repository', (c) => {
    rmSync(join(c.repo, 'tmp'), { recursive: true });
    writeFileSync(join(c.repo, 'tmp'), 'not a directory');
  }),
  {
    name: 'tmp/ holds a symbolic link named like a temporary file, to a file outside',
    target: 'B',
    apply: (c) => symlinkSync(join(c.sentinel, 'victim.txt'), join(c.repo, 'tmp', 'w.1.0123456789ab.tmp')),
    expect: OK,
  },
  // --- the chunk store and the repository's directories ---
  {
    name: 'a chunk directory is a symbolic link to a directory outside',
    target: 'B',
    apply: (c) => {
      const hex = chunkOf(c, c.id);
      const outside = moveOutside(c, join(c.repo, 'chunks', hex.slice(0, 2)), 'chunkdir');
      // A file the sweep of prune would remove, were it to look there.
      writeFileSync(join(outside, hex.slice(0, 2) + 'e'.repeat(62)), 'not a chunk of this repository');
    },
    verifyBad: true,
    expect: {
      restore: { code: 'CHUNK_CORRUPT', names: 'chunks/' },
      prune: { code: 'REPO_CORRUPT', names: 'chunks/' },
      backup: { code: 'REPO_CORRUPT', names: 'chunks/' },
    },
  },
  {
    name: 'a chunk is a symbolic link to a FIFO outside',
    target: 'B',
    apply: (c) => {
      const hex = chunkOf(c, c.id);
      replace(join(c.repo, 'chunks', hex.slice(0, 2), hex), { link: join(c.sentinel, 'pipe') });
    },
    verifyBad: true,
    expect: { restore: { code: 'CHUNK_CORRUPT', names: 'chunk ' } },
  },
  {
    name: 'backups/ is a symbolic link',
    target: 'B',
    apply: (c) => {
      moveOutside(c, join(c.repo, 'backups'), 'backups');
    },
    expect: Object.fromEntries(OPS.map((op) => [op, { code: 'REPO_CORRUPT', names: 'backups' }])),
  },
  {
    name: 'config.json is a FIFO',
    target: 'B',
    apply: (c) => replace(join(c.repo, 'config.json'), 'fifo'),
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
    expect((await verifyRepository({ repository: await openRepository(c.repo) })).ok).toBe(true);
    await restore({ repository: c.repo, backup: A, target: join(c.out, 'a.img') });
    writeSource(join(c.out, 'a-source.img'), 0);
    expect(cmp(join(c.out, 'a.img'), join(c.out, 'a-source.img'))).toBe(true);
  });

  it('prune refuses, removing nothing, when a damaged backup has no readable chunk index either', async () => {
    const c = newCase('prune both damaged', 'A');
    editManifest(c, (m) => ({ ...m, plan: undefined }));
    writeFileSync(join(c.repo, 'backups', `${A}.index`), 'not an index');
    const before = snapshot(c.repo);
    const e = await pruneRepository({ repository: await openRepository(c.repo), keepLast: 1 }).catch(
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(LowtideError);
    expect((e as LowtideError).code).toBe('REPO_CORRUPT');
    expect((e as LowtideError).message).toContain(`cannot prune: the manifest of backup ${A} is unreadable`);
    expect((e as LowtideError).message).toContain('nothing is removed');
    const after = snapshot(c.repo);
    for (const lock of ['locks/write.lock', 'locks/prune.lock']) {
      delete before[lock];
      delete after[lock];
    }
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
    replace(lockFile(c), { link: join(c.sentinel, 'victim.txt') });
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
    const p = await pruneRepository({ repository: await openRepository(c.repo), keepLast: 5 });
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

  it('backupMany reports them in its result and the CLI of several sources warns', async () => {
    const c = newCase('stale tmp many', 'B');
    const bytes = leaveStaleFiles(c.repo);
    const m = await backupMany({ sources: [source, source], repository: c.repo });
    expect(m.results.every((x) => x.ok)).toBe(true);
    expect(m.staleFilesRemoved).toEqual({ files: 2, bytes });
    expect(readdirSync(join(c.repo, 'tmp'))).toEqual([]);
    expect((await backupMany({ sources: [source], repository: c.repo })).staleFilesRemoved).toEqual({
      files: 0,
      bytes: 0,
    });
    leaveStaleFiles(c.repo);
    const r = lowtide(['backup', source, source, '--repo', c.repo, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('lowtide: warning: removed 2 temporary files (68.5 KiB)');
    expect((JSON.parse(r.stdout) as { staleFilesRemoved: unknown }).staleFilesRemoved).toEqual({ files: 2, bytes });
  });
});

describe('a chunk that is not a regular file', () => {
  it('a backup that needs it writes the chunk in its place; what the link points to is not read or changed', async () => {
    const c = newCase('chunk link backup', 'B');
    const hex = chunkOf(c, c.id);
    const chunk = join(c.repo, 'chunks', hex.slice(0, 2), hex);
    replace(chunk, { link: join(c.sentinel, 'victim.txt') });
    const before = snapshot(c.sentinel);
    const r = await backup({ source, repository: c.repo });
    // Treated as absent: stored again, the link replaced by the chunk file itself.
    expect(r.manifest.stats.chunksNew).toBe(1);
    expect(lstatSync(chunk).isFile()).toBe(true);
    expect(snapshot(c.sentinel)).toEqual(before);
    expect((await verifyRepository({ repository: await openRepository(c.repo) })).ok).toBe(true);
    await restore({ repository: c.repo, backup: c.id, target: join(c.out, 'b.img') });
    expect(readFileSync(join(c.out, 'b.img')).equals(contentOf.get(c.id)!)).toBe(true);
  });
});
