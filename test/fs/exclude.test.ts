/** Exclusion globs: parsing, validation and matching rules (no volume needed). */
import { describe, expect, it } from 'vitest';
import { LowtideError } from '../../lib/errors.js';
import { compileGlob, matchExclusions, parseExcludePattern, type MatchableEntry } from '../../lib/fs/index.js';

const dir = (path: string, shortName?: string): MatchableEntry => entry(path, true, shortName);
function entry(path: string, isDirectory = false, shortName?: string): MatchableEntry {
  const name = path.slice(path.lastIndexOf('/') + 1);
  return { path, name, shortName: shortName ?? name.toUpperCase(), isDirectory };
}

// A small tree in depth-first order, as FatVolume.files() lists it.
const tree: MatchableEntry[] = [
  entry('/README.TXT'),
  entry('/Résumé — final.txt', false, 'RSUM-F~1.TXT'),
  entry('/keep.tmpx', false, 'KEEP~1.TMP'),
  entry('/a.tmp'),
  dir('/Docs'),
  entry('/Docs/Report 2024.docx', false, 'REPORT~1.DOC'),
  entry('/Docs/notes.tmp'),
  dir('/Docs/Archive'),
  entry('/Docs/Archive/old.tmp'),
  entry('/Docs/Archive/old.txt'),
  dir('/Docs/Archive/deep'),
  entry('/Docs/Archive/deep/x.bin'),
  dir('/Program Files', 'PROGRA~1'),
  entry('/Program Files/app.exe'),
  entry('/Program Files/app1.exe'),
  entry('/Program Files/app12.exe'),
  dir('/tmp.d'),
  entry('/tmp.d/f'),
];

const paths = (globs: string[]): string[] => matchExclusions(tree, globs).matched.map((e) => e.path);

function invalid(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(LowtideError);
  expect((caught as LowtideError).code).toBe('INVALID_ARGUMENT');
  expect((caught as LowtideError).message).toMatch(message);
}

describe('matchExclusions', () => {
  it('matches a path from the root, with or without the leading slash', () => {
    expect(paths(['/README.TXT'])).toEqual(['/README.TXT']);
    expect(paths(['README.TXT'])).toEqual(['/README.TXT']);
    expect(paths(['/Docs/Archive/old.txt'])).toEqual(['/Docs/Archive/old.txt']);
    // A bare name is a path from the root, not "anywhere".
    expect(paths(['old.txt'])).toEqual([]);
  });

  it('is case-insensitive, Unicode included', () => {
    expect(paths(['/readme.txt'])).toEqual(['/README.TXT']);
    expect(paths(['/docs/ARCHIVE/OLD.TXT'])).toEqual(['/Docs/Archive/old.txt']);
    expect(paths(['/RÉSUMÉ — FINAL.TXT'])).toEqual(['/Résumé — final.txt']);
  });

  it('matches 8.3 short names as well as long names, at every level', () => {
    expect(paths(['/PROGRA~1'])).toEqual(['/Program Files']);
    expect(paths(['/progra~1/app.exe'])).toEqual(['/Program Files/app.exe']);
    expect(paths(['/Docs/REPORT~1.DOC'])).toEqual(['/Docs/Report 2024.docx']);
    // *.tmp also takes keep.tmpx, whose short name is KEEP~1.TMP (as on Windows).
    expect(paths(['/*.tmp'])).toEqual(['/keep.tmpx', '/a.tmp']);
  });

  it('* and ? stay within one component', () => {
    expect(paths(['/*'])).toEqual(tree.filter((e) => e.path.lastIndexOf('/') === 0).map((e) => e.path));
    expect(paths(['/Docs/*.tmp'])).toEqual(['/Docs/notes.tmp']);
    expect(paths(['/*/old.txt'])).toEqual([]);
    expect(paths(['/Program Files/app?.exe'])).toEqual(['/Program Files/app1.exe']);
    expect(paths(['/Program Files/app??.exe'])).toEqual(['/Program Files/app12.exe']);
    expect(paths(['/Program Files/app*.exe'])).toEqual([
      '/Program Files/app.exe',
      '/Program Files/app1.exe',
      '/Program Files/app12.exe',
    ]);
    expect(paths(['/R?sum? — final.txt'])).toEqual(['/Résumé — final.txt']); // ? is one character, not one byte
    expect(paths(['/Docs*'])).toEqual(['/Docs']);
  });

  it('** crosses directories: zero or more components', () => {
    expect(paths(['**/*.tmp'])).toEqual(['/keep.tmpx', '/a.tmp', '/Docs/notes.tmp', '/Docs/Archive/old.tmp']);
    expect(paths(['/Docs/**/*.txt'])).toEqual(['/Docs/Archive/old.txt']);
    expect(paths(['/Docs/**/x.bin'])).toEqual(['/Docs/Archive/deep/x.bin']);
    expect(paths(['**/deep'])).toEqual(['/Docs/Archive/deep']);
    // Zero components: /Docs/** is Docs itself (and so its whole subtree).
    expect(paths(['/Docs/**'])).toEqual(['/Docs']);
    expect(paths(['**'])).toEqual(paths(['/*']));
    expect(paths(['/**/**/old.txt'])).toEqual(['/Docs/Archive/old.txt']);
  });

  it('a directory match takes its subtree (descendants are not listed again)', () => {
    expect(paths(['/Docs', '/Docs/Archive/old.txt', '**/*.tmp'])).toEqual(['/keep.tmpx', '/a.tmp', '/Docs']);
    const m = matchExclusions(tree, ['/Docs', '**/*.tmp', '/nothing']);
    expect(m.counts).toEqual([1, 4, 0]);
  });

  it('a trailing slash matches directories only', () => {
    expect(paths(['/tmp.d/'])).toEqual(['/tmp.d']);
    expect(paths(['/README.TXT/'])).toEqual([]);
    expect(paths(['**/*/'])).toEqual(['/Docs', '/Program Files', '/tmp.d']);
  });

  it('treats regular-expression characters literally', () => {
    const t = [entry('/a+b (1) [x].txt'), entry('/a.b'), entry('/axb')];
    expect(matchExclusions(t, ['/a+b (1) [x].txt']).matched.map((e) => e.path)).toEqual(['/a+b (1) [x].txt']);
    expect(matchExclusions(t, ['/a.b']).matched.map((e) => e.path)).toEqual(['/a.b']);
  });

  it('needs the parents of an entry to match below them', () => {
    expect(matchExclusions([entry('/x/y.tmp')], ['**/*.tmp']).matched).toEqual([]);
  });
});

describe('parseExcludePattern', () => {
  it('splits an N: partition prefix', () => {
    expect(parseExcludePattern('/Docs/*.tmp')).toEqual({ glob: '/Docs/*.tmp' });
    expect(parseExcludePattern('2:/Docs/*.tmp')).toEqual({ partition: 2, glob: '/Docs/*.tmp' });
    expect(parseExcludePattern('0:**')).toEqual({ partition: 0, glob: '**' });
    expect(parseExcludePattern('12:Docs')).toEqual({ partition: 12, glob: 'Docs' });
  });

  it('rejects bad prefixes and bad globs with messages that name the pattern', () => {
    invalid(() => parseExcludePattern(''), /exclude pattern "": empty pattern/);
    invalid(
      () => parseExcludePattern('/'),
      /exclude pattern "\/": names only the root directory, which cannot be excluded/,
    );
    invalid(() => parseExcludePattern('///'), /names only the root directory/);
    invalid(() => parseExcludePattern('1:'), /exclude pattern "1:": nothing follows the partition prefix 1:/);
    invalid(() => parseExcludePattern('1:/'), /names only the root directory/);
    invalid(() => parseExcludePattern('x:/a'), /partition prefix "x" is not a partition number/);
    invalid(() => parseExcludePattern('-1:/a'), /partition prefix "-1" is not a partition number/);
    invalid(() => parseExcludePattern('99999999:/a'), /partition number 99999999 is out of range; expected 0 to 65535/);
    invalid(() => parseExcludePattern('/a:b'), /':' cannot appear in a FAT name/);
    invalid(() => parseExcludePattern('1:/a:b'), /':' cannot appear in a FAT name/);
    invalid(() => parseExcludePattern('\\Docs\\x'), /use '\/' to separate directories/);
    invalid(() => parseExcludePattern('/a/./b'), /'\.' is not allowed/);
    invalid(() => parseExcludePattern('/a/../b'), /'\.\.' is not allowed/);
    invalid(() => parseExcludePattern(7 as unknown as string), /exclude pattern 7: expected a string/);
  });

  it('compileGlob normalises slashes and repeated **', () => {
    const g = compileGlob('//Docs//**/**/x.txt/');
    expect(g.components.length).toBe(3);
    expect(g.components[1]).toBe('**');
    expect(g.directoryOnly).toBe(true);
    invalid(() => compileGlob('/'), /root directory/);
  });
});
