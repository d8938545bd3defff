// The CLI for scripts and agents: --progress ndjson, JSON errors and exit
// codes, schemaVersion, `latest` per source, honest throughput figures.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { haveTools, mkfs, Mtools } from '../fixtures/fat/tools.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import { TempDir, patternBytes, writeSparseFile } from '../helpers/tmp.js';

const tmp = new TempDir();
afterAll(() => tmp.remove());

const MiB = 1024 * 1024;

type Json = Record<string, unknown>;

function ndjson(stderr: string): Json[] {
  return stderr
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json);
}

function expectMonotonic(events: Json[], command: string): void {
  const progress = events.filter((e) => e.type === 'progress');
  expect(progress.length).toBeGreaterThanOrEqual(2);
  for (const e of events) {
    expect(e.schemaVersion).toBe(1);
    expect(e.command).toBe(command);
  }
  for (let i = 1; i < progress.length; i++) {
    expect(progress[i]!.bytesDone as number).toBeGreaterThanOrEqual(progress[i - 1]!.bytesDone as number);
    expect(progress[i]!.elapsedSeconds as number).toBeGreaterThanOrEqual(progress[i - 1]!.elapsedSeconds as number);
  }
  const last = progress.at(-1)!;
  expect(last.bytesDone).toBe(last.bytesTotal);
  expect(typeof last.bytesPerSecond).toBe('number');
  expect(events.at(-1)).toMatchObject({ type: 'end', ok: true });
}

describe('--progress ndjson', () => {
  it('image, backup and restore write one JSON object a line on stderr, without a terminal', () => {
    const src = tmp.file('progress.img');
    writeSparseFile(src, 24 * MiB, [{ offset: 0, data: patternBytes(24 * MiB, 3) }]);
    // A rate limit makes the job last long enough for several reports.
    const slow = ['--progress', 'ndjson', '--rate-limit', '25'];

    const img = lowtide(['image', src, tmp.file('progress-out.img'), ...slow, '--json']);
    expect(img.status, img.stderr).toBe(0);
    const events = ndjson(img.stderr);
    expectMonotonic(events, 'image');
    const p = events.find((e) => e.type === 'progress')!;
    expect(p).toMatchObject({ bytesTotal: 24 * MiB });
    expect(p.throttle).toMatchObject({ queueDepth: expect.any(Number), delayMs: expect.any(Number) });
    expect(typeof (p.throttle as Json).throttled).toBe('boolean');

    const repo = tmp.file('progress-repo');
    expect(lowtide(['init', repo]).status).toBe(0);
    const b = lowtide(['backup', src, '--repo', repo, ...slow]);
    expect(b.status, b.stderr).toBe(0);
    expectMonotonic(
      ndjson(
        b.stderr
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .join('\n'),
      ),
      'backup',
    );

    const r = lowtide(['restore', b.stdout.trim(), tmp.file('progress-restored.img'), '--repo', repo, ...slow]);
    expect(r.status, r.stderr).toBe(0);
    expectMonotonic(ndjson(r.stderr), 'restore');
  });

  it('--no-progress and --progress none print nothing on stderr', () => {
    const src = tmp.file('quiet.img');
    writeFileSync(src, patternBytes(2 * MiB, 4));
    for (const flag of [['--no-progress'], ['--progress', 'none']]) {
      const r = lowtide(['image', src, tmp.file(`quiet-${flag.length}.img`), ...flag, '--json']);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe('');
    }
  });
});

describe('errors and exit codes', () => {
  it('a runtime error with --json: the error document on stdout, the line on stderr, exit 1', () => {
    const r = lowtide(['image', tmp.file('missing.img'), tmp.file('never.img'), '--json']);
    expect(r.status).toBe(1);
    const doc = JSON.parse(r.stdout) as Json;
    expect(doc).toMatchObject({ schemaVersion: 1, error: { code: 'NOT_FOUND', message: expect.any(String) } });
    expect(r.stderr).toBe(`lowtide: error [NOT_FOUND]: ${(doc.error as Json).message as string}\n`);
  });

  it("commander's usage errors have the lowtide form, in JSON with --json, exit 2", () => {
    const unknown = lowtide(['image', 'a', 'b', '--frobnicate', '--json']);
    expect(unknown.status).toBe(2);
    expect(JSON.parse(unknown.stdout)).toMatchObject({ schemaVersion: 1, error: { code: 'USAGE' } });
    expect(unknown.stderr).toMatch(/^lowtide: error \[USAGE\]: unknown option '--frobnicate'.*\n$/);

    const missing = lowtide(['restore', 'latest', '--repo', tmp.file('r'), '--json']);
    expect(missing.status).toBe(2);
    expect(JSON.parse(missing.stdout)).toMatchObject({ error: { code: 'USAGE' } });
    expect(missing.stderr).toMatch(
      /^lowtide: error \[USAGE\]: missing required argument 'target' \(see lowtide restore --help\)\n$/,
    );

    const plain = lowtide(['frobnicate']);
    expect(plain.status).toBe(2);
    expect(plain.stdout).toBe('');
    expect(plain.stderr).toMatch(/^lowtide: error \[USAGE\]: unknown command 'frobnicate'.*\n$/);
  });

  it('verify exits 3 when it finds damage (a flipped chunk byte), 1 when it cannot run', () => {
    const src = tmp.file('verify.img');
    writeFileSync(src, patternBytes(3 * MiB, 7));
    const repo = tmp.file('verify-repo');
    expect(lowtide(['init', repo]).status).toBe(0);
    expect(lowtide(['backup', src, '--repo', repo]).status).toBe(0);
    const ok = lowtide(['verify', '--repo', repo, '--json']);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ schemaVersion: 1, ok: true });

    const dir = join(repo, 'chunks', readdirSync(join(repo, 'chunks'))[0]!);
    const chunk = join(dir, readdirSync(dir)[0]!);
    const bytes = readFileSync(chunk);
    bytes[bytes.length - 1]! ^= 0xff;
    writeFileSync(chunk, bytes);
    const bad = lowtide(['verify', '--repo', repo, '--json']);
    expect(bad.status).toBe(3);
    expect(JSON.parse(bad.stdout)).toMatchObject({ schemaVersion: 1, ok: false });
    expect(lowtide(['verify', '--repo', repo]).status).toBe(3);

    const none = lowtide(['verify', '--repo', tmp.file('no-repo'), '--json']);
    expect(none.status).toBe(1);
    expect(JSON.parse(none.stdout)).toMatchObject({ error: { code: 'REPO_NOT_FOUND' } });
  });
});

describe('JSON documents', () => {
  it("carry schemaVersion, and list's entries are a subset of the manifest", () => {
    const src = tmp.file('list.img');
    writeFileSync(src, patternBytes(2 * MiB, 8));
    const repo = tmp.file('list-repo');
    const init = lowtide(['init', repo, '--json']);
    expect(JSON.parse(init.stdout)).toMatchObject({ schemaVersion: 1 });
    const b = lowtide(['backup', src, '--repo', repo, '--json']);
    expect(b.status).toBe(0);
    const { schemaVersion, figures, ...manifest } = JSON.parse(b.stdout) as Json;
    expect(schemaVersion).toBe(1);
    expect(figures).toMatchObject({ sourceSize: 2 * MiB, bytesRead: 2 * MiB });
    const list = JSON.parse(lowtide(['list', '--repo', repo, '--json']).stdout) as {
      schemaVersion: number;
      backups: Json[];
    };
    expect(list.schemaVersion).toBe(1);
    expect(list.backups).toHaveLength(1);
    const entry = list.backups[0]!;
    expect(manifest).toMatchObject(entry);
    for (const doc of [
      lowtide(['inspect', src, '--json']),
      lowtide(['prune', '--repo', repo, '--keep-last', '1', '--json']),
    ]) {
      expect(doc.status).toBe(0);
      expect(JSON.parse(doc.stdout)).toMatchObject({ schemaVersion: 1 });
    }
  });
});

describe('latest with several sources', () => {
  it('is ambiguous without --source, the newest backup of that source with it, and says which', () => {
    const a = tmp.file('disk-a.img');
    const b = tmp.file('disk-b.img');
    writeFileSync(a, patternBytes(2 * MiB, 11));
    writeFileSync(b, patternBytes(3 * MiB, 12));
    const repo = tmp.file('latest-repo');
    expect(lowtide(['init', repo]).status).toBe(0);
    const idA = lowtide(['backup', a, '--repo', repo]).stdout.trim();
    const idB = lowtide(['backup', b, '--repo', repo]).stdout.trim();
    expect(idA).not.toBe(idB);

    for (const args of [
      ['restore', 'latest', tmp.file('amb.img'), '--repo', repo, '--json'],
      ['files', 'latest', '--repo', repo, '--json'],
      ['extract', 'latest', '/x', tmp.file('amb-x'), '--repo', repo, '--json'],
    ]) {
      const r = lowtide(args);
      expect(r.status, args[0]).toBe(2);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'AMBIGUOUS_BACKUP' } });
      expect(r.stderr).toContain(a);
      expect(r.stderr).toContain(b);
    }

    // The older backup, of disk A, though B's is the newest in the repository.
    const out = tmp.file('restored-a.img');
    const r = lowtide(['restore', 'latest', out, '--repo', repo, '--source', a, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(cmp(a, out)).toBe(true);
    expect(r.stderr).toContain(`lowtide: latest is ${idA} (${a}, `);
    const doc = JSON.parse(r.stdout) as Json;
    expect(doc).toMatchObject({ schemaVersion: 1, backup: idA, selectedBackup: { id: idA, by: 'latest' } });
    expect((doc.selectedBackup as { source: Json }).source.path).toBe(a);

    const alone = lowtide(['files', a, '--source', a]);
    expect(alone.status).toBe(2);
    expect(alone.stderr).toMatch(/^lowtide: error \[USAGE\]: --source: only with --repo/);

    const none = lowtide(['restore', 'latest', tmp.file('none.img'), '--repo', repo, '--source', tmp.file('c.img')]);
    expect(none.status).toBe(1);
    expect(none.stderr).toContain('[BACKUP_NOT_FOUND]');
  });
});

describe('throughput figures', () => {
  const missing = haveTools('mkfs.fat', 'mcopy') ? undefined : 'mkfs.fat or mcopy is not installed';
  it.skipIf(skipReason('image throughput of a mostly free FAT volume', missing))(
    'image reports bytes read per wall second, with the source size apart',
    () => {
      const img = tmp.file('fat.img');
      mkfs(img, 256 * MiB, { fat: 32 });
      new Mtools(img).put('/data.bin', patternBytes(6 * MiB, 13), tmp.path);
      const r = lowtide(['image', img, tmp.file('fat-out.img'), '--json', '--throttle', 'off']);
      expect(r.status, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout) as Json & { figures: Json };
      const bytesRead = s.bytesRead as number;
      const seconds = s.seconds as number;
      expect(bytesRead).toBeLessThan(16 * MiB);
      expect(s.figures).toMatchObject({ sourceSize: 256 * MiB, bytesRead, seconds });
      expect(s.figures.readBytesPerSecond).toBeCloseTo(bytesRead / seconds, 3);
      expect(s.figures.writeBytesPerSecond).toBeCloseTo((s.bytesWritten as number) / seconds, 3);
      expect(s.mbPerSecond as number).toBeCloseTo(bytesRead / seconds / 1e6, 6);

      const text = lowtide(['image', img, tmp.file('fat-out2.img'), '--throttle', 'off']);
      expect(text.status).toBe(0);
      const m = /time +([\d.]+) s; read ([\d.]+) (B|KiB|MiB) \(([\d.]+) MB\/s\)/.exec(text.stdout);
      expect(m, text.stdout).not.toBeNull();
      const unit = { B: 1, KiB: 1024, MiB: MiB }[m![3] as 'B' | 'KiB' | 'MiB'];
      // Printed to 2 decimals of seconds (± 0.005 s) and 3 digits of bytes (± 1 %):
      // the printed rate lies within what those allow.
      const bytes = Number(m![2]) * unit;
      const t = Number(m![1]);
      const lowest = (bytes * 0.99) / (t + 0.005) / 1e6;
      const highest = t > 0.005 ? (bytes * 1.01) / (t - 0.005) / 1e6 : Infinity;
      expect(Number(m![4])).toBeGreaterThanOrEqual(lowest * 0.999);
      expect(Number(m![4])).toBeLessThanOrEqual(highest * 1.001 + 0.1);
      expect(text.stdout).toMatch(/size +256 MiB/);
    },
  );
});
