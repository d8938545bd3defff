/**
 * Packed S3 repositories (format version 2: chunk records in pack objects)
 * against a real Ceph RADOS Gateway: round trips and incrementals, many
 * writers at once, prune while a backup runs, SIGKILL mid-backup, a damaged
 * or missing pack (verify names the chunk and its backups), encryption (no
 * plaintext in any object), the known-chunks index with locations, and
 * older readers kept out.
 */
import { closeSync, constants, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initRepository, openRepository, pruneRepository, restore, verifyRepository } from '../../lib/index.js';
import { cmp } from '../helpers/cli.js';
import { rejection } from '../helpers/errors.js';
import {
  lowtideS3,
  lowtideS3Async,
  newBucket,
  repoOptions,
  restoresExactly as checkRestore,
  rgw,
  s3Client,
  s3Writers,
  sharedImage,
  verifyOk,
} from '../helpers/s3.js';
import { skipReason } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';
import { pruneWhileBackupRuns, twoPairsAtOnce } from '../helpers/writers.js';

/** True when files in `dir` can be opened with O_DIRECT (not on tmpfs). */
function takesDirectWrites(dir: string): boolean {
  const probe = join(dir, 'direct-probe');
  try {
    closeSync(openSync(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT, 0o644));
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { force: true });
  }
}

const KiB = 1024;
const MiB = 1024 * KiB;
const PASSWORD = 'a packed passphrase';
const KNOWN = 'LOWTIDE-KNOWN-PLAINTEXT-IN-A-PACK-';

describe.skipIf(skipReason('packed S3 repositories', rgw().skip))('packed S3 repositories (Ceph RGW)', () => {
  const work = new TempDir('lowtide-s3-packs-');
  let client: S3Client;
  let bucket: string;
  let ep: string[];
  beforeAll(async () => {
    client = s3Client();
    bucket = await newBucket(client);
    ep = ['--s3-endpoint', rgw().endpoint];
  });
  afterAll(() => {
    client?.destroy();
    work.remove();
  });

  async function keys(prefix: string): Promise<{ key: string; size: number }[]> {
    const out: { key: string; size: number }[] = [];
    let token: string | undefined;
    do {
      const r = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of r.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  }

  async function object(key: string): Promise<Buffer> {
    const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  }

  async function waitForKey(prefix: string): Promise<void> {
    for (let i = 0; i < 600; i++) {
      if ((await keys(prefix)).length > 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${prefix} appeared`);
  }

  /** A packed repository of 64 KiB chunks in packs of 1 MiB, through the CLI. */
  function init(name: string, extra: string[] = []): string {
    const repo = `s3://${bucket}/${name}`;
    const r = lowtideS3(['init', repo, '--chunk-size', '64K', '--pack-size', '1M', ...extra, ...ep]);
    expect(r.status, r.stderr).toBe(0);
    return repo;
  }

  const image = (name: string, seed: number, mib?: number, shared?: number): string =>
    sharedImage(work, name, seed, mib, shared);
  const restoresExactly = (repo: string, id: string, source: string): void => checkRestore(work, repo, id, source);

  /** The entries of an unencrypted packed index: id, pack, offset, length (null: a zero chunk). */
  async function indexEntries(
    prefix: string,
    id: string,
  ): Promise<({ hex: string; pack: string; offset: number; length: number } | null)[]> {
    const data = await object(`${prefix}/backups/${id}.index`);
    expect(data.readUInt32LE(4)).toBe(2);
    const out: ({ hex: string; pack: string; offset: number; length: number } | null)[] = [];
    for (let o = 32; o < data.length; o += 64) {
      const e = data.subarray(o, o + 64);
      if (e.subarray(0, 32).every((b) => b === 0)) out.push(null);
      else
        out.push({
          hex: e.toString('hex', 0, 32),
          pack: e.toString('hex', 32, 48),
          offset: Number(e.readBigUInt64LE(48)),
          length: e.readUInt32LE(56),
        });
    }
    return out;
  }

  it('round trip and incremental: chunks in packs, no object per chunk', async () => {
    const repo = init('round');
    const config = JSON.parse((await object('round/config.json')).toString('utf8')) as Record<string, unknown>;
    expect(config.version).toBe(2);
    expect(config.packSize).toBe(MiB);
    const src = work.file('round.img');
    const data = Buffer.concat([patternBytes(6 * MiB, 21), Buffer.alloc(MiB), patternBytes(MiB + 4096, 22)]);
    writeFileSync(src, data);
    let r = lowtideS3(['backup', src, '--repo', repo, '--json', ...ep]);
    expect(r.status, r.stderr).toBe(0);
    const first = JSON.parse(r.stdout) as { id: string; stats: { chunksNew: number; chunksZero: number } };
    expect(first.stats.chunksZero).toBe(16);
    expect(await keys('round/chunks/')).toEqual([]);
    const packs = await keys('round/packs/');
    // 113 chunks of 64 KiB (incompressible) in packs of about 1 MiB.
    expect(packs.length).toBeGreaterThanOrEqual(6);
    expect(packs.length).toBeLessThanOrEqual(8);
    for (const p of packs) expect(p.key).toMatch(/^round\/packs\/[0-9a-f]{32}$/);
    restoresExactly(repo, first.id, src);

    // Incremental: two chunks change; one small pack more.
    data.set(patternBytes(1000, 23), 100);
    data.set(patternBytes(1000, 24), 3 * MiB + 10);
    writeFileSync(src, data);
    r = lowtideS3(['backup', src, '--repo', repo, '--json', ...ep]);
    expect(r.status, r.stderr).toBe(0);
    const second = JSON.parse(r.stdout) as { id: string; parent: string; stats: { chunksNew: number } };
    expect(second.parent).toBe(first.id);
    expect(second.stats.chunksNew).toBe(2);
    expect((await keys('round/packs/')).length).toBe(packs.length + 1);
    const entries = await indexEntries('round', second.id);
    expect(entries.filter((e) => e !== null && !packs.some((p) => p.key.endsWith(e.pack)))).toHaveLength(2);
    restoresExactly(repo, second.id, src);
    verifyOk(repo);

    // files of a FAT-less image: none; verify counts the records the backups name.
    const report = await verifyRepository({ repository: repoOptions('s3://' + bucket + '/round') });
    expect(report.ok).toBe(true);
    expect(report.chunksChecked).toBe(first.stats.chunksNew + 2);

    // prune: the first backup goes; its packs stay (the second needs records in each).
    r = lowtideS3(['prune', '--repo', repo, '--keep-last', '1', '--json', ...ep]);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { packsRemoved: number }).packsRemoved).toBe(0);
    restoresExactly(repo, second.id, src);
  });

  const writers = s3Writers(
    work,
    () => client,
    () => bucket,
  );

  it('two backups of different disks at once, and the same disk twice at once', async () => {
    await twoPairsAtOnce(writers, init('many'));
  });

  it('prune while a backup runs deletes no pack; afterwards only packs nothing needs', async () => {
    const repo = init('prune');
    let before = 0;
    const r = await pruneWhileBackupRuns(writers, repo, async () => {
      before = (await keys('prune/packs/')).length;
    });
    expect(r.during.packsRemoved ?? 0).toBe(0);
    expect(r.during.chunksKept).toMatch(/1 backup\(s\) running/);
    expect((await keys('prune/packs/')).length).toBeGreaterThanOrEqual(before);
    // Nothing running, and the first backup's packs still hold records the slow one names: kept.
    expect(r.after.packsRemoved).toBe(0);
    // c changes whole: once its backup goes, nothing needs the first backup's packs or its own.
    writeFileSync(r.c, patternBytes(8 * MiB, 6));
    const fourth = lowtideS3(['backup', r.c, '--repo', repo, ...ep]).stdout.trim();
    const p = lowtideS3(['prune', '--repo', repo, '--keep-last', '1', '--json', ...ep]);
    expect(p.status, p.stderr).toBe(0);
    const again = JSON.parse(p.stdout) as { removed: string[]; packsRemoved: number; bytesFreed: number };
    expect(again.removed).toEqual([r.slow]);
    expect(again.packsRemoved).toBeGreaterThanOrEqual(8);
    expect(again.bytesFreed).toBeGreaterThan(8 * MiB);
    restoresExactly(repo, fourth, r.c);
    restoresExactly(repo, r.second, r.d);
    verifyOk(repo);
  });

  it('SIGKILL mid-backup: no manifest, the repository stays sound, the next backup works', async () => {
    const repo = init('killed');
    const src = image('k.img', 13, 8, 0);
    const job = lowtideS3Async(['backup', src, '--repo', repo, '--rate-limit', '2', ...ep]);
    await waitForKey('killed/packs/');
    job.child.kill('SIGKILL');
    await job.done;
    expect(await keys('killed/backups/')).toEqual([]);
    verifyOk(repo);
    const r = lowtideS3(['backup', src, '--repo', repo, ...ep]);
    expect(r.status, r.stderr).toBe(0);
    restoresExactly(repo, r.stdout.trim(), src);
    // The killed backup's lease is stale only after minutes: prune now keeps every pack.
    const p = lowtideS3(['prune', '--repo', repo, '--keep-last', '1', '--json', ...ep]);
    expect(p.status, p.stderr).toBe(0);
    restoresExactly(repo, r.stdout.trim(), src);
  });

  it('a damaged record: verify names the chunk and its backups; a missing pack: missing chunks', async () => {
    const url = `s3://${bucket}/damaged`;
    (await initRepository(repoOptions(url), { chunkSize: 64 * KiB, packSize: MiB })).close();
    const src = work.file('damaged.img');
    writeFileSync(src, patternBytes(3 * MiB, 31));
    const b = await backup({ source: src, repository: repoOptions(url) });
    const entries = await indexEntries('damaged', b.id);
    const e = entries[3]!;
    const key = `damaged/packs/${e.pack}`;
    const original = await object(key);
    const altered = Buffer.from(original);
    altered[e.offset + e.length - 1]! ^= 0x01;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: altered }));
    const r = lowtideS3(['verify', '--repo', url, ...ep]);
    expect(r.status).toBe(3);
    expect(r.stdout + r.stderr).toContain(e.hex);
    let report = await verifyRepository({ repository: repoOptions(url) });
    expect(report.problems.map((p) => [p.digest, p.problem, p.backups])).toEqual([[e.hex, 'corrupt', [b.id]]]);
    expect(report.damagedBackups).toEqual([b.id]);
    expect(
      (await rejection(restore({ repository: repoOptions(url), backup: b.id, target: work.file('t.out') }))).code,
    ).toBe('CHUNK_CORRUPT');

    // The pack deleted: every chunk in it is missing.
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    report = await verifyRepository({ repository: repoOptions(url) });
    const inPack = entries.filter((x) => x !== null && x.pack === e.pack).map((x) => x!.hex);
    expect(report.problems.filter((p) => p.problem === 'missing').map((p) => p.digest)).toEqual(inPack.sort());
    expect(
      (await rejection(restore({ repository: repoOptions(url), backup: b.id, target: work.file('t2.out') }))).code,
    ).toBe('CHUNK_MISSING');
  });

  /** An encrypted packed repository of 64 KiB chunks in packs of 1 MiB, through the API; its URL. */
  async function initEncrypted(name: string): Promise<string> {
    const url = `s3://${bucket}/${name}`;
    (
      await initRepository(repoOptions(url), {
        encryption: 'aes-256-gcm',
        password: PASSWORD,
        chunkSize: 64 * KiB,
        packSize: MiB,
      })
    ).close();
    return url;
  }

  it('encrypted: round trip, no plaintext in any object, a flipped byte is named', async () => {
    const url = await initEncrypted('enc');
    const src = work.file('enc.img');
    const known = Buffer.from(KNOWN.repeat(Math.ceil(MiB / KNOWN.length))).subarray(0, MiB);
    writeFileSync(src, Buffer.concat([patternBytes(2 * MiB, 41), known, Buffer.alloc(MiB), patternBytes(MiB, 42)]));
    const b = await backup({ source: src, repository: repoOptions(url), password: PASSWORD });
    const out = work.file('enc.out');
    await restore({ repository: repoOptions(url), password: PASSWORD, backup: b.id, target: out });
    expect(cmp(src, out)).toBe(true);
    const all = await keys('enc/');
    expect(all.some((o) => o.key.startsWith('enc/packs/'))).toBe(true);
    expect(all.some((o) => o.key.startsWith('enc/chunks/'))).toBe(false);
    for (const o of all) {
      const body = await object(o.key);
      expect(body.includes(Buffer.from(KNOWN)), o.key).toBe(false);
      expect(body.includes(Buffer.from('enc.img')), o.key).toBe(false);
    }
    // A flipped byte in a pack: verify names one chunk (a record fails authentication).
    const pack = all.find((o) => o.key.startsWith('enc/packs/'))!;
    const body = await object(pack.key);
    const altered = Buffer.from(body);
    altered[40] = (altered[40] ?? 0) ^ 1;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: pack.key, Body: altered }));
    const report = await verifyRepository({ repository: repoOptions(url), password: PASSWORD });
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]!.problem).toBe('corrupt');
    expect(report.problems[0]!.message).toContain('fails authentication');
    expect(report.problems[0]!.backups).toEqual([b.id]);
    expect(
      (
        await rejection(
          restore({ repository: repoOptions(url), password: PASSWORD, backup: b.id, target: work.file('x.out') }),
        )
      ).code,
    ).toBe('CHUNK_CORRUPT');
  });

  it('encrypted: chunks repeated within one read of a pack restore exactly (each record opened once in place)', async () => {
    const url = await initEncrypted('repeat');
    const src = work.file('repeat.img');
    const a = patternBytes(64 * KiB, 51);
    const b = patternBytes(64 * KiB, 52);
    // a a a b a b b a, then plain data: repeated records within one span;
    // a last chunk of a page and 904 bytes (written aligned, then the tail).
    writeFileSync(src, Buffer.concat([a, a, a, b, a, b, b, a, patternBytes(MiB, 53), a, b, patternBytes(5000, 54)]));
    const made = await backup({ source: src, repository: repoOptions(url), password: PASSWORD });
    for (let i = 0; i < 2; i++) {
      const out = work.file(`repeat-${i}.out`);
      const r = await restore({ repository: repoOptions(url), password: PASSWORD, backup: made.id, target: out });
      expect(cmp(src, out)).toBe(true);
      // An image file restored from object storage bypasses the page cache where its file system allows it.
      expect(r.direct).toBe(takesDirectWrites(work.path));
    }
  });

  it('the known-chunks index gives the records of another disk; another machine stores them again', async () => {
    const url = `s3://${bucket}/known`;
    (await initRepository(repoOptions(url), { chunkSize: 64 * KiB, packSize: MiB })).close();
    const here = work.file('cache-here');
    const elsewhere = work.file('cache-elsewhere');
    mkdirSync(here);
    const img = (name: string, seed: number): string => {
      const path = work.file(name);
      writeFileSync(path, Buffer.concat([patternBytes(56 * 64 * KiB, 1000), patternBytes(8 * 64 * KiB, seed)]));
      return path;
    };
    const run = async (src: string, cacheDir: string): Promise<{ id: string; chunksNew: number }> => {
      const r = await backup({ source: src, repository: repoOptions(url, { cacheDir }), parent: null });
      return { id: r.id, chunksNew: r.manifest.stats.chunksNew };
    };
    const a = img('ka.img', 1);
    expect((await run(a, here)).chunksNew).toBe(64);
    const b = img('kb.img', 2);
    const second = await run(b, here);
    expect(second.chunksNew).toBe(8);
    // Without the index there is nothing to ask the storage about: all stored again.
    const c = img('kc.img', 2);
    const third = await run(c, elsewhere);
    expect(third.chunksNew).toBe(64);
    // A prune elsewhere that deletes packs makes the index here untrusted; restores stay exact.
    const e = work.file('ke.img');
    writeFileSync(e, patternBytes(64 * 64 * KiB, 8));
    const gone = await run(e, elsewhere);
    writeFileSync(e, patternBytes(64 * 64 * KiB, 9));
    await run(e, elsewhere);
    const pruned = await pruneRepository({ repository: repoOptions(url, { cacheDir: elsewhere }), keepLast: 1 });
    expect(pruned.removed).toEqual([gone.id]);
    expect(pruned.packsRemoved).toBe(4);
    const d = img('kd.img', 2);
    const fourth = await run(d, here);
    expect(fourth.chunksNew).toBe(64);
    for (const [id, src] of [
      [fourth.id, d],
      [third.id, c],
    ] as const) {
      const out = work.file(`k-${id}.out`);
      await restore({ repository: repoOptions(url), backup: id, target: out });
      expect(cmp(out, src)).toBe(true);
    }
    expect((await verifyRepository({ repository: repoOptions(url) })).ok).toBe(true);
  });

  it('an older reader is kept out; a local directory with version 2 is refused; bad pack sizes', async () => {
    const url = `s3://${bucket}/format`;
    (await initRepository(repoOptions(url), { packSize: 2 * MiB })).close();
    const dir = work.file('copied');
    mkdirSync(dir);
    for (const d of ['chunks', 'backups', 'locks', 'tmp']) mkdirSync(`${dir}/${d}`);
    writeFileSync(`${dir}/config.json`, await object('format/config.json'));
    const err = await rejection(openRepository(dir));
    expect(err.code).toBe('REPO_FORMAT');
    expect(err.message).toMatch(/version 2 .*object storage only/);
    expect((await rejection(initRepository(work.file('local'), { packSize: MiB }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(initRepository(repoOptions(`s3://${bucket}/small`), { packSize: 1000 }))).message).toMatch(
      /packSize/,
    );
    // A version 1 repository is still made on request (--pack-size 0).
    const v1 = init('v1', ['--pack-size', '0']);
    expect(JSON.parse((await object('v1/config.json')).toString('utf8')).version).toBe(1);
    const src = image('v1.img', 51, 1, 0);
    const r = lowtideS3(['backup', src, '--repo', v1, ...ep]);
    expect(r.status, r.stderr).toBe(0);
    expect((await keys('v1/chunks/')).length).toBe(16);
    expect(await keys('v1/packs/')).toEqual([]);
    restoresExactly(v1, r.stdout.trim(), src);
  });
});
