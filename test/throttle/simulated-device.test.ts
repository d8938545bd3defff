import { describe, expect, it } from 'vitest';
import { createController } from '../../lib/throttle/index.js';
import { SimulatedDevice } from './simulated-device.js';

describe('SimulatedDevice', () => {
  it('serves an unthrottled job at its transfer rate less the per-request overhead', () => {
    const d = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 });
    const r = d.run(createController('off'), { durationMs: 2000 });
    const perBlockS = 50e-6 + (1 << 20) / 400e6;
    expect(r.throughput(500, 2000)).toBeCloseTo((1 << 20) / perBlockS, -6);
    // FIFO at queue depth 32: every block waits for the 31 ahead of it.
    expect(r.steps.at(-1)!.latencyNs / 1e9).toBeCloseTo(32 * perBlockS, 6);
  });

  it('has parallel channels', () => {
    const one = new SimulatedDevice({ bytesPerSecond: 100e6, channels: 1 });
    const four = new SimulatedDevice({ bytesPerSecond: 100e6, channels: 4 });
    const t1 = one.run(createController('off'), { durationMs: 1000 }).throughput(200, 1000);
    const t4 = four.run(createController('off'), { durationMs: 1000 }).throughput(200, 1000);
    expect(t4 / t1).toBeCloseTo(4, 1);
  });

  it('runs competing load as Poisson arrivals at the configured rate, with M/D/1 waiting times', () => {
    // The job is kept small (one 4 KiB request at a time) so that production dominates.
    const d = new SimulatedDevice({
      bytesPerSecond: 400e6,
      overheadUs: 50,
      load: [{ startMs: 0, endMs: 20_000, iops: 8000, bytes: 4096 }],
      seed: 42,
    });
    const idle = createController('off', { maxQueueDepth: 1, maxBlockSize: 4096, minBlockSize: 4096 });
    const r = d.run(idle, { durationMs: 20_000 });
    const service = 50e-6 + 4096 / 400e6; // s
    const rho = 8000 * service;
    // The job's 4 KiB requests add a little load; production dominates.
    const n = r.production.count;
    expect(n / 20).toBeGreaterThan(7800);
    expect(n / 20).toBeLessThan(8200);
    // Mean latency of M/D/1 with the job's extra load: above the pure service time.
    expect(r.production.mean / 1e9).toBeGreaterThan(service * (1 + rho / (2 * (1 - rho))) * 0.9);
  });

  it('is deterministic for a seed, and different for another', () => {
    const run = (seed: number) =>
      new SimulatedDevice({ load: [{ startMs: 0, endMs: 2000, iops: 9000 }], seed }).run(
        createController('parda', { targetLatencyMs: 3 }),
        { durationMs: 2000 },
      );
    const a = run(1);
    const b = run(1);
    const c = run(2);
    expect(b.steps).toEqual(a.steps);
    expect(b.production.toJSON()).toEqual(a.production.toJSON());
    expect(c.steps).not.toEqual(a.steps);
  });

  it('switches load phases on and off at their times', () => {
    const d = new SimulatedDevice({
      load: [
        { startMs: 1000, endMs: 2000, iops: 5000 },
        { startMs: 3000, endMs: 4000, iops: 5000 },
      ],
    });
    const r = d.run(createController('off', { maxQueueDepth: 1 }), { durationMs: 5000 });
    expect(r.productionBetween(0, 1000).count).toBe(0);
    expect(r.productionBetween(1000, 2010).count).toBeGreaterThan(4500);
    expect(r.productionBetween(2010, 3000).count).toBe(0);
    expect(r.productionBetween(3000, 4010).count).toBeGreaterThan(4500);
    expect(r.productionBetween(4010, 5000).count).toBe(0);
  });

  it('validates its options', () => {
    expect(() => new SimulatedDevice({ bytesPerSecond: 0 })).toThrow(
      /bytesPerSecond: expected a number greater than 0/,
    );
    expect(() => new SimulatedDevice({ load: [{ startMs: 5, endMs: 1, iops: 1 }] })).toThrow(
      /load\[0\]\.endMs: expected a time not before startMs \(5\), got 1/,
    );
    expect(() => new SimulatedDevice().run(createController('off'), { durationMs: 0 })).toThrow(/durationMs/);
  });
});
