import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, imageSource, initRepository, openSource, restore } from '../../lib/index.js';
import { resolveThrottleSettings } from '../../lib/throttle/job-settings.js';
import { JobThrottle } from '../../lib/throttle/job-throttle.js';
import { storageDevices } from '../../lib/throttle/storage-counters.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const tmp = new TempDir();
afterAll(() => tmp.remove());
const src = tmp.file('src.bin');
writeFileSync(src, patternBytes(16 * MiB, 3));

describe('throttle wiring', () => {
  it('decisions reach the native reader: queue depth, request size and pacing', async () => {
    const big = tmp.file('big.bin');
    const expected = patternBytes(64 * MiB, 5);
    writeFileSync(big, expected);
    const source = await openSource(big);
    try {
      // A target far below what any read takes: aimd must cut the window to the minimum.
      const throttle = await JobThrottle.create(
        resolveThrottleSettings({ throttle: 'aimd', latencyTargetMs: 0.000_001 }),
        { maxQueueDepth: 16, maxBlockSize: MiB, minBlockSize: 64 * 1024, alignment: 4096 },
      );
      const reader = source.read(undefined, {
        blockSize: throttle.decision.blockSize,
        maxBlockSize: MiB,
        queueDepth: throttle.decision.queueDepth,
        maxQueueDepth: 16,
      });
      throttle.attach(reader);
      let small = 0;
      for await (const b of reader) {
        expect(b.data.equals(expected.subarray(b.offset, b.offset + b.length))).toBe(true);
        throttle.observe(b.latencyNs, b.length);
        const s = reader.stats();
        expect(s.queueDepth).toBe(throttle.decision.queueDepth);
        expect(s.blockSize).toBe(throttle.decision.blockSize);
        expect(s.pacingNs).toBe(Math.round(throttle.pacingMs() * 1e6));
        if (b.length === 64 * 1024) small++;
        // Enough once reads at the smallest size come back: at the minimum
        // window the controller paces them, and reading on would only wait.
        if (small >= 8) break;
      }
      expect(throttle.decision.queueDepth).toBe(1);
      expect(throttle.decision.blockSize).toBe(64 * 1024);
      expect(small).toBe(8);
      const report = throttle.report();
      expect(report.controller).toBe('aimd');
      expect(report.queueDepth.some((q) => q.value === 1)).toBe(true);
    } finally {
      await source.close();
    }
  });

  it('a forced delay (--rate-limit) makes the job take longer and is reported: 16 MiB at 20 MB/s takes at least 0.78 s', () => {
    const out = tmp.file('capped.img');
    const r = lowtide(['image', src, out, '--throttle', 'off', '--rate-limit', '20', '--json']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as {
      seconds: number;
      throttle: { rateLimitBytesPerSecond: number; controller: string; pacedMs: number };
    };
    expect(s.throttle.rateLimitBytesPerSecond).toBe(20e6);
    // Every 1 MiB read was spaced by 1 MiB / 20 MB/s = 52 ms, and the report says so.
    expect(s.throttle.pacedMs).toBeCloseTo(16 * (MiB / 20e6) * 1000, 0);
    expect(s.throttle.controller).toBe('off');
    // (16 MiB - one 1 MiB block issued at once) / 20 MB/s
    expect(s.seconds).toBeGreaterThan((15 * MiB) / 20e6);
    expect(cmp(src, out)).toBe(true);
  });

  it('canary (the default) probes the source while the job runs and reports its calibrated target', async () => {
    const out = tmp.file('canary.img');
    const s = await imageSource({ source: src, output: out, force: true });
    expect(s.throttle.controller).toBe('canary');
    expect(s.throttle.target.mode).toBe('auto');
    expect(s.throttle.probes!.count).toBeGreaterThan(8);
    expect(s.throttle.probes!.calibrations).toBeGreaterThanOrEqual(1);
    expect(s.throttle.target.ms).toBe(s.throttle.probes!.targetMs);
    expect(s.throttle.target.ms).toBeGreaterThan(0);
    expect(s.throttle.target.ms).toBeLessThan(1000);
    expect(s.throttle.probeError).toBeUndefined();
    expect(cmp(src, out)).toBe(true);
    // The storage under the source, for the quiet checks: what lsblk lists as its disks.
    const disks = storageDevices(src).map((d) => basename(d));
    if (disks.length > 0) {
      expect(s.throttle.storageDevices).toEqual(disks);
      expect(s.throttle.probes!.boost.deviceCounters).toBe(true);
    } else {
      console.warn(`[skip] quiet-check wiring: ${src} is not on a block device`);
      expect(s.throttle.storageDevices).toBeUndefined();
    }
  });

  it('canary probes read each of their places once before reporting any: the first calibration is not made of cold reads', async () => {
    const source = await openSource(src);
    try {
      const throttle = await JobThrottle.create(
        resolveThrottleSettings({}),
        { maxQueueDepth: 16, maxBlockSize: MiB, minBlockSize: 64 * 1024, alignment: 4096 },
        source,
      );
      // Each call records its place and how many probes the controller had seen then.
      const calls: { offset: number; seen: number }[] = [];
      const probe = source.probe.bind(source);
      source.probe = (offset: number, length?: number) => {
        calls.push({ offset, seen: throttle.report().probes!.count });
        return probe(offset, length);
      };
      throttle.startProbes();
      while (calls.length < 40) await new Promise((r) => setTimeout(r, 5));
      await throttle.stop();
      const places = new Set(calls.slice(0, 16).map((c) => c.offset));
      expect(places.size).toBe(16);
      // The first pass and the first reported probe: nothing seen yet.
      expect(calls.slice(0, 17).every((c) => c.seen === 0)).toBe(true);
      // From then on every probe is reported (the last one may be cut by stop()).
      expect(calls[17]!.seen).toBe(1);
      const reported = throttle.report().probes!.count;
      expect(calls.length - 16 - reported).toBeGreaterThanOrEqual(0);
      expect(calls.length - 16 - reported).toBeLessThanOrEqual(1);
      // Then the same places in the same order.
      expect(calls.slice(16, 32).map((c) => c.offset)).toEqual(calls.slice(0, 16).map((c) => c.offset));
    } finally {
      await source.close();
    }
  });

  it('the probe interval is an option: 50 ms between probes gives at most one probe per 50 ms of the job', async () => {
    const out = tmp.file('slow-probes.img');
    const s = await imageSource({
      source: src,
      output: out,
      force: true,
      probeIntervalMs: 50,
      rateLimitBytesPerSecond: 20e6,
    });
    expect(s.seconds).toBeGreaterThan(0.5);
    expect(s.throttle.probes!.count).toBeGreaterThan(2);
    expect(s.throttle.probes!.count).toBeLessThanOrEqual(Math.ceil((s.seconds * 1000) / 50) + 2);
    // Held back is wall time: within the job's (the sum of the decisions' delays is not).
    expect(s.throttle.heldBackMs).toBeGreaterThanOrEqual(0);
    expect(s.throttle.heldBackMs).toBeLessThanOrEqual(s.seconds * 1000 + 1);
    expect(cmp(src, out)).toBe(true);
    await expect(imageSource({ source: src, output: tmp.file('x.img'), probeIntervalMs: 0 })).rejects.toThrow(
      /probeIntervalMs/,
    );
    await expect(
      imageSource({ source: src, output: tmp.file('x.img'), probeIntervalMs: 'often' as unknown as number }),
    ).rejects.toThrow(/probeIntervalMs/);
    // Only canary probes: with another controller the setting is an error, not ignored.
    await expect(
      imageSource({ source: src, output: tmp.file('x.img'), throttle: 'parda', probeIntervalMs: 5 }),
    ).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: /only the canary controller probes/,
    });
  });

  it('a restore into a file has nothing to probe: parda runs instead, and the report says so', async () => {
    const repo = tmp.file('repo');
    await initRepository(repo);
    const b = await backup({ source: src, repository: repo, allBlocks: true, throttle: 'off' });
    const r = await restore({ repository: repo, backup: b.id, target: tmp.file('restored.img') });
    expect(r.throttle.controller).toBe('parda');
    expect(r.throttle.fallback).toMatch(/canary needs a source to probe/);
    expect(cmp(src, tmp.file('restored.img'))).toBe(true);
  });

  it('auto target comes from an idle probe and is reported', async () => {
    const out = tmp.file('auto.img');
    const s = await imageSource({ source: src, output: out, force: true, throttle: 'parda' });
    expect(s.throttle.controller).toBe('parda');
    expect(s.throttle.target.mode).toBe('auto');
    expect(s.throttle.target.idleP50Ms).toBeGreaterThan(0);
    expect(s.throttle.target.ms).toBeGreaterThanOrEqual(s.throttle.target.idleP50Ms!);
    expect(cmp(src, out)).toBe(true);
  });

  it('bad throttle options are rejected with the option named', async () => {
    await expect(imageSource({ source: src, output: tmp.file('x.img'), throttle: 'fast' as 'off' })).rejects.toThrow(
      /throttle: expected one of "canary", "threshold", "aimd", "parda", "off", got "fast"/,
    );
    await expect(imageSource({ source: src, output: tmp.file('x.img'), latencyTargetMs: -1 })).rejects.toThrow(
      /latencyTargetMs: expected a number greater than 0, got -1/,
    );
    expect(lowtide(['image', src, tmp.file('y.img'), '--latency-target', 'soon']).status).toBe(2);
    // An admission limit only means something when several jobs start: never silently ignored.
    await expect(imageSource({ source: src, output: tmp.file('x.img'), admissionLimitMs: 5 })).rejects.toThrow(
      /admissionLimitMs: only backupMany\(\) uses an admission limit/,
    );
    expect(lowtide(['image', src, tmp.file('z.img'), '--admission-limit', '5']).status).toBe(2);
  });
});
