/**
 * Exclusion patterns: globs over the paths of a FAT volume.
 *
 * A pattern is a path from the volume root with '/' between components (a
 * leading '/' is optional). Each component is matched case-insensitively
 * against the long name AND the 8.3 short name of the entry at that level:
 * `*` is any run of characters and `?` one character, both within one
 * component; a `**` component is zero or more whole components, so it crosses
 * directories (`/Docs/**` is Docs itself and everything under it, `**\/*.tmp`
 * every .tmp file at any depth, `/Docs/*` everything in Docs but not Docs).
 * A trailing '/' limits the pattern to directories. A pattern that matches a
 * directory takes its whole subtree. Other characters (including `[`, `]`)
 * stand for themselves.
 *
 * On the command line a pattern may start with `N:` to apply to partition N
 * only; parseExcludePattern() splits that prefix off.
 */
import { LowtideError } from '../errors.js';
import { describe } from '../options.js';

/** Highest partition number a prefix may name (GPT tables rarely hold more than 128 entries). */
const maxPartition = 65535;

export interface ExcludePattern {
  /** The partition the pattern is limited to (`N:` prefix); undefined: every FAT volume. */
  readonly partition?: number;
  /** The glob, without the prefix. */
  readonly glob: string;
}

function invalid(pattern: unknown, why: string): never {
  throw new LowtideError('INVALID_ARGUMENT', `exclude pattern ${describe(pattern)}: ${why}`);
}

/** The components of a glob after validation ('' components from repeated or edge slashes dropped). */
function globComponents(glob: string, original: unknown): { parts: string[]; directoryOnly: boolean } {
  if (glob.length === 0) invalid(original, 'empty pattern; expected a path from the volume root such as /Docs/*.tmp');
  if (glob.includes('\\')) invalid(original, "use '/' to separate directories ('\\' cannot appear in a FAT name)");
  if (glob.includes(':')) {
    invalid(
      original,
      "':' cannot appear in a FAT name; a partition prefix is a partition number followed by ':' (for example 1:/Docs)",
    );
  }
  if (glob.includes('\0')) invalid(original, 'contains a NUL character');
  const parts = glob.split('/').filter((p) => p !== '');
  if (parts.length === 0) invalid(original, 'names only the root directory, which cannot be excluded');
  for (const p of parts) {
    if (p === '.' || p === '..') invalid(original, `'${p}' is not allowed; patterns are paths from the volume root`);
  }
  return { parts, directoryOnly: glob.endsWith('/') };
}

/**
 * Splits an optional `N:` partition prefix off an exclude pattern and
 * validates both parts. Throws LowtideError INVALID_ARGUMENT with a message
 * that names the pattern.
 */
export function parseExcludePattern(pattern: string): ExcludePattern {
  if (typeof pattern !== 'string') invalid(pattern, 'expected a string');
  const m = /^([^/:]*):/s.exec(pattern);
  if (!m) {
    globComponents(pattern, pattern);
    return { glob: pattern };
  }
  const prefix = m[1]!;
  if (!/^\d+$/.test(prefix)) {
    invalid(
      pattern,
      `partition prefix ${JSON.stringify(prefix)} is not a partition number; expected N: with N from 0 to ${maxPartition}`,
    );
  }
  const partition = Number(prefix);
  if (!Number.isSafeInteger(partition) || partition > maxPartition) {
    invalid(pattern, `partition number ${prefix} is out of range; expected 0 to ${maxPartition}`);
  }
  const glob = pattern.slice(m[0].length);
  if (glob.length === 0) invalid(pattern, `nothing follows the partition prefix ${prefix}:`);
  globComponents(glob, pattern);
  return { partition, glob };
}

/** One component of a compiled glob: `**` or a regular expression for one name. */
export type GlobComponent = '**' | RegExp;

export interface CompiledGlob {
  readonly glob: string;
  readonly components: readonly GlobComponent[];
  /** The pattern ended with '/': it matches directories only. */
  readonly directoryOnly: boolean;
}

function componentRegExp(part: string): RegExp {
  let src = '';
  for (const ch of part) {
    if (ch === '*') {
      if (!src.endsWith('.*')) src += '.*';
    } else if (ch === '?') src += '.';
    else src += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  // i: case-insensitive (Unicode simple case folding with u); s: '.' matches anything; u: '?' is one code point.
  return new RegExp(`^${src}$`, 'isu');
}

/** Validates and compiles a glob (no partition prefix). */
export function compileGlob(glob: string): CompiledGlob {
  if (typeof glob !== 'string') invalid(glob, 'expected a string');
  const { parts, directoryOnly } = globComponents(glob, glob);
  const components: GlobComponent[] = [];
  for (const p of parts) {
    const c: GlobComponent = p === '**' ? '**' : componentRegExp(p);
    // Consecutive '**' are one.
    if (c === '**' && components[components.length - 1] === '**') continue;
    components.push(c);
  }
  return { glob, components, directoryOnly };
}

/** What matching needs of an entry (DirEntry has all of it). */
export interface MatchableEntry {
  /** Full path from the root using long names, "/a/b". */
  readonly path: string;
  readonly name: string;
  readonly shortName: string;
  readonly isDirectory: boolean;
}

/** Positions of a glob reachable after some components: a small sorted set. */
type States = readonly number[];

function closure(g: CompiledGlob, states: number[]): number[] {
  const out = new Set<number>();
  for (const s of states) {
    let p = s;
    out.add(p);
    while (p < g.components.length && g.components[p] === '**') out.add(++p);
  }
  return [...out].sort((a, b) => a - b);
}

function step(g: CompiledGlob, states: States, e: MatchableEntry): number[] {
  const next: number[] = [];
  for (const s of states) {
    if (s >= g.components.length) continue;
    const c = g.components[s]!;
    if (c === '**') next.push(s);
    else if (c.test(e.name) || (e.shortName !== '' && c.test(e.shortName))) next.push(s + 1);
  }
  return closure(g, next);
}

export interface ExclusionMatch<E> {
  /**
   * Entries matched by a pattern and not inside another matched directory,
   * in input order: deleting these deletes everything matched.
   */
  readonly matched: E[];
  /** For each glob, how many entries it matched (directly, wherever they are). */
  readonly counts: number[];
}

function parentPath(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/**
 * Matches globs against the entries of a volume (every file and directory,
 * as FatVolume.files() lists them; a parent must be among them for its
 * children to match below it).
 */
export function matchExclusions<E extends MatchableEntry>(
  entries: readonly E[],
  globs: readonly string[],
): ExclusionMatch<E> {
  const compiled = globs.map((g) => compileGlob(g));
  const byPath = new Map<string, E>();
  for (const e of entries) byPath.set(e.path, e);
  const rootStates = compiled.map((g) => closure(g, [0]));
  // Per path: the glob states after it, and whether it (or an ancestor) is matched.
  const memo = new Map<string, { states: States[]; hit: boolean[]; covered: boolean }>();

  const visit = (e: E) => {
    const have = memo.get(e.path);
    if (have) return have;
    const pp = parentPath(e.path);
    const parentEntry = pp === '/' ? undefined : byPath.get(pp);
    let parent: { states: States[]; covered: boolean };
    if (pp === '/') parent = { states: rootStates, covered: false };
    else if (parentEntry) parent = visit(parentEntry);
    else parent = { states: compiled.map(() => []), covered: false }; // parent unknown: nothing below it matches
    const states = compiled.map((g, i) => step(g, parent.states[i]!, e));
    const hit = compiled.map((g, i) => states[i]!.includes(g.components.length) && (!g.directoryOnly || e.isDirectory));
    const r = { states, hit, covered: parent.covered || hit.some(Boolean) };
    memo.set(e.path, r);
    return r;
  };

  const matched: E[] = [];
  const counts = compiled.map(() => 0);
  for (const e of entries) {
    const r = visit(e);
    r.hit.forEach((h, i) => {
      if (h) counts[i]!++;
    });
    const pp = parentPath(e.path);
    const parentCovered = pp !== '/' && byPath.has(pp) && memo.get(pp)!.covered;
    if (r.hit.some(Boolean) && !parentCovered) matched.push(e);
  }
  return { matched, counts };
}
