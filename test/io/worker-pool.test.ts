/**
 * The addon's own worker threads: hashing, compression, probes and chunk
 * writes do not use libuv's thread pool, which belongs to the host process.
 */
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LowtideError, backup, initRepository, setWorkerThreads, workerPoolStats } from '../../lib/index.js';

const root = resolve(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'lowtide-pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the addon worker pool', () => {
  it('runs a backup: a digest and a store task per chunk, while the host keeps using libuv', async () => {
    expect(workerPoolStats().threads).toBeGreaterThanOrEqual(2);
    expect(workerPoolStats().threads).toBeLessThanOrEqual(16);
    const src = join(dir, 'src.bin');
    writeFileSync(src, randomFillSync(Buffer.alloc(16 << 20)));
    const repo = join(dir, 'repo');
    await initRepository(repo);
    const before = workerPoolStats().executed;
    let done = false;
    const job = backup({ source: src, repository: repo, throttle: 'off' }).finally(() => (done = true));
    let hostCalls = 0;
    while (!done) {
      await stat(src);
      hostCalls++;
    }
    const r = await job;
    expect(r.manifest.stats.chunksNew).toBe(16);
    // 16 chunks of 1 MiB: each hashed and stored by a pool task.
    expect(workerPoolStats().executed - before).toBeGreaterThanOrEqual(32);
    expect(hostCalls).toBeGreaterThan(0);
  });

  it('works with one thread and with more, and checks its argument', async () => {
    const initial = workerPoolStats().threads;
    try {
      setWorkerThreads(1);
      expect(workerPoolStats().threads).toBe(1);
      const repo = join(dir, 'repo-1');
      await initRepository(repo);
      const r = await backup({ source: join(dir, 'src.bin'), repository: repo, throttle: 'off' });
      expect(r.manifest.stats.chunksNew).toBe(16);
      setWorkerThreads(6);
      expect(workerPoolStats().threads).toBe(6);
    } finally {
      setWorkerThreads(initial);
    }
    for (const bad of [0, 257, 1.5, '4', undefined]) {
      expect(() => setWorkerThreads(bad as number)).toThrow(LowtideError);
    }
    expect(() => setWorkerThreads(0)).toThrow(/count: expected an integer from 1 to 256, got 0/);
  });

  it("needs no libuv thread: with libuv's only thread blocked, sources open, probe, hash and compress", () => {
    // UV_THREADPOOL_SIZE=1 and that thread stuck in open() of a FIFO nobody
    // writes: anything queued on libuv's pool would wait for ever.
    const fifo = join(dir, 'fifo');
    const script = `
      const { execFileSync } = require('node:child_process');
      const fs = require('node:fs');
      execFileSync('mkfifo', [${JSON.stringify(fifo)}]);
      fs.open(${JSON.stringify(fifo)}, 'r', (err, fd) => { if (!err) fs.closeSync(fd); });
      const timer = setTimeout(() => { console.log('timeout'); process.exit(3); }, 20000);
      (async () => {
        const m = require(${JSON.stringify(root)});
        const s = await m.openSource(${JSON.stringify(join(dir, 'src.bin'))});
        const ns = await s.probe(0, 4096);
        await s.close();
        const { native } = await import(${JSON.stringify(join(root, 'dist', 'native.js'))});
        const data = Buffer.alloc(1 << 20, 7);
        const digest = await native.digest(data, false);
        const packed = await native.zstdCompress(data, 3);
        console.log(JSON.stringify({ probe: ns > 0, digest: digest.length, packed: packed.length < data.length }));
        clearTimeout(timer);
        // Let the blocked open() finish so the process can exit.
        fs.closeSync(fs.openSync(${JSON.stringify(fifo)}, 'w'));
      })().catch((e) => { console.log('error', e.message); process.exit(2); });`;
    const r = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
      timeout: 60_000,
    });
    expect(r.stdout.trim(), r.stderr).toBe(JSON.stringify({ probe: true, digest: 32, packed: true }));
    expect(r.status).toBe(0);
  });
});
