/**
 * Someone else's reads counted while the job runs, against a real device's
 * counters: a loop device over a file in /dev/shm, which nothing but this
 * test reads. Its counts are the job's reads one for one (none counted as
 * someone else's, boosted), and a reader beside the job is counted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageSource, openSource } from '../../lib/index.js';
import { StorageIoCounter } from '../../lib/throttle/index.js';
import { JobThrottle } from '../../lib/throttle/job-throttle.js';
import { resolveThrottleSettings } from '../../lib/throttle/job-settings.js';
import { attachLoop, detachLoop, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { patternBytes } from '../helpers/tmp.js';

const reason = loopUnavailableReason();
const shm = mkdtempSync('/dev/shm/lowtide-counted-');
let loop: string | undefined;

beforeAll(() => {
  if (reason !== undefined) return;
  const file = join(shm, 'disk.bin');
  writeFileSync(file, patternBytes(64 << 20, 9));
  loop = attachLoop(file);
});
afterAll(() => {
  if (loop !== undefined) detachLoop(loop);
  rmSync(shm, { recursive: true, force: true });
});

describe('reads counted on a real device', () => {
  it("the device's submitted reads are the job's, one for one", async () => {
    if (skipReason('counted reads', reason)) return;
    const counter = StorageIoCounter.open(loop!)!;
    expect(counter.exact).toBe(true);
    const src = await openSource(loop!, { direct: 'on' });
    try {
      const before = counter.read()!.readsSubmitted;
      for (let i = 0; i < 50; i++) await src.probe(i * 4096 * 7, 4096);
      // Requests the device takes whole (a larger one may become two, each counted).
      const size = counter.maxUnsplitBytes;
      expect(size).toBeGreaterThanOrEqual(64 * 1024);
      let n = 0;
      for await (const b of src.read([{ offset: 0, length: 16 * size }], { blockSize: size, queueDepth: 4 })) {
        n++;
        void b;
      }
      expect(n).toBe(16);
      expect(counter.read()!.readsSubmitted - before).toBe(50 + 16);
    } finally {
      await src.close();
      counter.close();
    }
  });

  it("an idle device: no one else's reads, boosted; a reader beside the job is counted and ends it", async () => {
    if (skipReason('counted reads', reason)) return;
    const out = join(shm, 'out.img');
    // Stretched to ~1.3 s so that the checks and windows have time to act.
    const alone = await imageSource({
      source: loop!,
      output: out,
      force: true,
      direct: 'on',
      rateLimitBytesPerSecond: 50e6,
    });
    const a = alone.throttle.probes!.boost;
    expect(a.running.counted).toBe(true);
    expect(a.running.stopped).toBeUndefined();
    // A read of the job's that the device splits (a buffer without huge
    // pages, more segments than the device takes) counts twice: a few a
    // second at most, far below a load.
    expect(a.running.reads / (a.running.countedMs / 1000)).toBeLessThan(20);
    expect(a.boostedMs).toBeGreaterThan(0.5 * alone.seconds * 1000);

    // Another process reads the same device all along (dd again and again
    // from the start: one pass takes about a second), in its own process group.
    const dd = spawn(
      'sh',
      ['-c', 'while :; do dd if="$1" of=/dev/null iflag=direct bs=4k status=none; done', 'sh', loop!],
      {
        stdio: 'ignore',
        detached: true,
      },
    );
    try {
      const busy = await imageSource({
        source: loop!,
        output: out,
        force: true,
        direct: 'on',
        rateLimitBytesPerSecond: 50e6,
      });
      const b = busy.throttle.probes!.boost;
      expect(b.running.reads).toBeGreaterThan(100);
      expect(b.boostedMs).toBeLessThan(0.2 * busy.seconds * 1000);
    } finally {
      // The whole group by its id: the shell and its dd.
      process.kill(-dd.pid!, 'SIGKILL');
    }
  });

  it("a job that reads in passes, a new reader each: the earlier readers' reads stay the job's", async () => {
    if (skipReason('counted reads', reason)) return;
    const src = await openSource(loop!, { direct: 'on' });
    const ac = new AbortController();
    const throttle = await JobThrottle.create(
      resolveThrottleSettings({ throttle: 'canary', rateLimitBytesPerSecond: 80e6 }),
      { maxQueueDepth: 16, maxBlockSize: 1 << 20, minBlockSize: 64 * 1024, alignment: 4096 },
      src,
      ac.signal,
    );
    try {
      // Three passes over the 64 MiB device, ~0.8 s each.
      for (let pass = 0; pass < 3; pass++) {
        const reader = src.read(undefined, { ...throttle.readerOptions(), maxBlockSize: 1 << 20, maxQueueDepth: 16 });
        throttle.attach(reader);
        for await (const b of reader) throttle.observe(b.latencyNs, b.length);
      }
    } finally {
      await throttle.stop();
      await src.close();
    }
    const boost = throttle.report().probes!.boost;
    expect(boost.running.counted).toBe(true);
    expect(boost.running.stopped).toBeUndefined();
    // Each pass reads 64 MiB in requests of 64 KiB to 1 MiB: a reader's count
    // lost at the next pass's start would be 64 or more of someone else's.
    expect(boost.running.reads).toBeLessThan(20);
  });
});
