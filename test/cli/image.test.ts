import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  attachLoop,
  detachLoop,
  hasCommand,
  loopUnavailableReason,
  skipReason,
  traceFileCalls,
} from '../helpers/system.js';
import { CLI, cmp, lowtide } from '../helpers/cli.js';
import { TempDir, patternBytes, writeSparseFile } from '../helpers/tmp.js';

const tmp = new TempDir();
afterAll(() => tmp.remove());

const MiB = 1024 * 1024;

describe('lowtide image', () => {
  it('starts writeback as the image grows, not only at the final fsync (strace: sync_file_range on the partial file before its fsync)', () => {
    if (skipReason('writeback tracing', hasCommand('strace') ? undefined : 'strace is not installed')) return;
    const src = tmp.file('writeback-src.img');
    writeSparseFile(src, 160 * MiB, [{ offset: 0, data: patternBytes(160 * MiB, 23) }]);
    const out = tmp.file('writeback-out.img');
    const t = traceFileCalls([CLI, 'image', src, out, '--throttle', 'off'], ['sync_file_range', 'fsync']);
    expect(t.status, t.stderr.slice(-2000)).toBe(0);
    expect(cmp(src, out)).toBe(true);
    const onPartial = t.calls.filter(([, path]) => path.endsWith('.lowtide-partial'));
    expect(onPartial.filter(([name]) => name === 'sync_file_range').length).toBe(2);
    expect(onPartial.at(-1)?.[0]).toBe('fsync');
  });

  it('a throttled image starts writeback in small steps that follow its pace (strace)', () => {
    if (skipReason('writeback tracing', hasCommand('strace') ? undefined : 'strace is not installed')) return;
    const src = tmp.file('paced-writeback-src.img');
    writeSparseFile(src, 64 * MiB, [{ offset: 0, data: patternBytes(64 * MiB, 29) }]);
    const out = tmp.file('paced-writeback-out.img');
    // 200 MB/s: at most 50 ms of it (10 MB) between two writeback starts.
    const args = [CLI, 'image', src, out, '--throttle', 'off', '--rate-limit', '200'];
    const t = traceFileCalls(args, ['sync_file_range', 'fsync']);
    expect(t.status, t.stderr.slice(-2000)).toBe(0);
    expect(cmp(src, out)).toBe(true);
    const onPartial = t.calls.filter(([, path]) => path.endsWith('.lowtide-partial'));
    // 64 MiB in steps of <= 10 MB: at least 6 starts (unpaced, a 64 MiB image gets one).
    expect(onPartial.filter(([name]) => name === 'sync_file_range').length).toBeGreaterThanOrEqual(6);
    expect(onPartial.at(-1)?.[0]).toBe('fsync');
  });

  it('copies a file with holes and data to an identical, sparse image', () => {
    const src = tmp.file('sparse-src.img');
    const size = 64 * MiB + 4096 + 512;
    writeSparseFile(src, size, [
      { offset: 0, data: patternBytes(3 * MiB, 1) },
      { offset: 20 * MiB + 12345, data: patternBytes(100_000, 2) },
      { offset: 40 * MiB, data: Buffer.alloc(2 * MiB, 0) }, // explicit zeros: must still be a hole
      { offset: size - 700, data: patternBytes(700, 3) },
    ]);
    const out = tmp.file('sparse-out.img');
    // Unthrottled, so that every read is a whole 1 MiB block (the counts below rely on it).
    const r = lowtide(['image', src, out, '--json', '--throttle', 'off']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const summary = JSON.parse(r.stdout) as Record<string, number | string | boolean | Record<string, number>>;
    expect(cmp(src, out)).toBe(true);
    const st = statSync(out);
    expect(st.size).toBe(size);
    // Data blocks: 3 (first 3 MiB) + 1 (block holding the 100 kB) + 1 (tail).
    expect(st.blocks * 512).toBeLessThanOrEqual(5 * MiB + 64 * 1024);
    expect(summary.size).toBe(size);
    expect(summary.bytesWritten).toBe(4 * MiB + (size - 64 * MiB));
    expect(summary.bytesSkipped).toBe(size - (summary.bytesWritten as number));
    expect(summary.bytesRead).toBeGreaterThanOrEqual(size);
    expect(summary.direct).toBe(true);
    expect(typeof (summary.latency as Record<string, number>).p99Ms).toBe('number');
    expect((summary.latency as Record<string, number>).count).toBe(Math.ceil(size / MiB));
    // No temporary files left behind.
    expect(readdirSync(tmp.path).filter((f) => f.includes('lowtide-partial'))).toEqual([]);
  });

  it('--no-sparse writes every block; --block-size and --engine are honoured', () => {
    const src = tmp.file('dense-src.img');
    writeSparseFile(src, 8 * MiB, [{ offset: MiB, data: patternBytes(MiB, 5) }]);
    const out = tmp.file('dense-out.img');
    const r = lowtide([
      'image',
      src,
      out,
      '--no-sparse',
      '--block-size',
      '64K',
      '--queue-depth',
      '4',
      '--engine',
      'threads',
      '--json',
    ]);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(s.blockSize).toBe(65536);
    expect(s.engine).toBe('threads');
    expect(s.bytesWritten).toBe(8 * MiB);
    expect(cmp(src, out)).toBe(true);
    expect(statSync(out).blocks * 512).toBeGreaterThanOrEqual(8 * MiB);
  });

  it('refuses to overwrite without --force, replaces with it', () => {
    const src = tmp.file('f-src.img');
    writeFileSync(src, patternBytes(MiB, 9));
    const out = tmp.file('f-out.img');
    writeFileSync(out, 'precious');
    const r = lowtide(['image', src, out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^lowtide: error \[OUTPUT_EXISTS\]: output .* exists; pass force \(--force\) to replace it\n$/,
    );
    expect(cmp(src, out)).toBe(false);
    const r2 = lowtide(['image', src, out, '--force', '--json']);
    expect(r2.status).toBe(0);
    expect(cmp(src, out)).toBe(true);
  });

  it('a missing source fails with exit 1 and one line on stderr, leaving nothing', () => {
    const out = tmp.file('never.img');
    const r = lowtide(['image', tmp.file('missing.img'), out]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('[NOT_FOUND]');
    expect(existsSync(out)).toBe(false);
  });

  it('Ctrl-C (SIGINT) stops the job with exit 130 and leaves no output or temporary file', async () => {
    const src = tmp.file('slow-src.img');
    writeSparseFile(src, 512 * MiB, [{ offset: 0, data: patternBytes(MiB, 21) }]);
    const out = tmp.file('interrupted.img');
    const child = spawn(process.execPath, [CLI, 'image', src, out, '--block-size', '4K', '--queue-depth', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    // Wait until the temporary image exists, i.e. the copy is under way.
    const deadline = Date.now() + 20_000;
    while (!readdirSync(tmp.path).some((f) => f.includes('interrupted.img') && f.includes('lowtide-partial'))) {
      if (Date.now() > deadline) throw new Error('the image job never started');
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toContain('[ABORTED]');
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(tmp.path).filter((f) => f.includes('lowtide-partial'))).toEqual([]);
  });

  it('usage errors exit 2', () => {
    expect(lowtide(['image']).status).toBe(2);
    expect(lowtide(['image', 'a', 'b', '--block-size', 'huge']).status).toBe(2);
    expect(lowtide(['image', 'a', 'b', '--queue-depth', '0']).status).toBe(2);
    expect(lowtide(['frobnicate']).status).toBe(2);
    const r = lowtide(['image', tmp.file('x'), tmp.file('y'), '--block-size', '1000']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('blockSize: expected a multiple of the sector size');
  });

  it('--help and --version exit 0', () => {
    expect(lowtide(['--help']).status).toBe(0);
    expect(lowtide(['--version']).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('lowtide inspect', () => {
  it('reports size, sector sizes and I/O mode as JSON', () => {
    const f = tmp.file('inspect.img');
    writeFileSync(f, patternBytes(3 * MiB + 512, 4));
    const r = lowtide(['inspect', f, '--json']);
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(info).toMatchObject({
      path: f,
      kind: 'file',
      size: 3 * MiB + 512,
      sectorSize: 512,
      direct: true,
      ioMode: 'O_DIRECT',
    });
    const text = lowtide(['inspect', f]);
    expect(text.stdout).toContain('O_DIRECT');
  });

  const reason = loopUnavailableReason();
  it.skipIf(skipReason('inspect/image of a loop device', reason))(
    'works on a loop device, and images it exactly',
    () => {
      const img = tmp.file('loop-src.img');
      writeSparseFile(img, 16 * MiB, [{ offset: 5 * MiB, data: patternBytes(2 * MiB, 11) }]);
      const dev = attachLoop(img);
      try {
        const info = JSON.parse(lowtide(['inspect', dev, '--json']).stdout) as Record<string, unknown>;
        expect(info).toMatchObject({ kind: 'block', size: 16 * MiB, sectorSize: 512 });
        const out = tmp.file('loop-out.img');
        const r = lowtide(['image', dev, out, '--json']);
        expect(r.status).toBe(0);
        expect(cmp(img, out)).toBe(true);
        expect(statSync(out).blocks * 512).toBeLessThanOrEqual(2 * MiB + 64 * 1024);
      } finally {
        detachLoop(dev);
      }
    },
  );
});
