/**
 * The `canary` controller against the simulated device, with probes issued
 * the way JobThrottle issues them (one small read at a time, every 2 ms):
 * production protected, calibration pauses, recovery when the load goes,
 * bounded decisions on garbage probes. Simulated time only.
 */
import { describe, expect, it } from 'vitest';
import { createController, type ThrottleController, type ThrottleDecision } from '../../lib/throttle/index.js';
import { SimulatedDevice, type SimulationStep } from './simulated-device.js';
import { seeded } from './helpers.js';

const PROBE = { everyMs: 2 };
const WAITED = (d: ThrottleDecision): boolean => d.delayMs >= 400;

function gaps(steps: SimulationStep[]): { atMs: number; ms: number }[] {
  const out: { atMs: number; ms: number }[] = [];
  for (let i = 1; i < steps.length; i++) {
    const ms = (steps[i]!.atNs - steps[i - 1]!.atNs) / 1e6;
    out.push({ atMs: steps[i - 1]!.atNs / 1e6, ms });
  }
  return out;
}

describe('canary on the simulated device', () => {
  // An SSD-like FIFO device, production at 6000 IOPS for 14 s, then idle.
  const loadEndMs = 14_000;
  const durationMs = 20_000;
  const device = new SimulatedDevice({
    bytesPerSecond: 400e6,
    overheadUs: 50,
    load: [{ startMs: 0, endMs: loadEndMs, iops: 6000 }],
  });
  const controller = createController('canary');
  const r = device.run(controller, { durationMs, probe: PROBE });
  const off = device.run(createController('off'), { durationMs: loadEndMs });

  it('keeps production latency far below what an unthrottled job causes, and still moves data', () => {
    const prod = r.productionBetween(1000, loadEndMs).percentile(99);
    const prodOff = off.productionBetween(1000, loadEndMs).percentile(99);
    expect(prod).toBeLessThan(0.1 * prodOff);
    expect(r.throughput(1000, loadEndMs)).toBeGreaterThan(20e6);
  });

  it('calibrates at the start, twice more a second apart, then every 10 s, pausing its own requests meanwhile', () => {
    const rep = controller.report();
    expect(rep.controller).toBe('canary');
    expect(rep.probes!.calibrations).toBe(4); // at 0 s, ~1 s, ~2 s and ~12 s
    expect(rep.probes!.count).toBeGreaterThan(5000);
    expect(rep.probes!.targetMs).toBeGreaterThan(0);
    // Each pause: a gap of at least 50 ms between two completions of ours ...
    const pauses = [
      [900, 1500],
      [1900, 2800],
      [11_800, 13_000],
    ];
    const during = (g: { atMs: number }) => pauses.some(([a, b]) => g.atMs > a! && g.atMs < b!);
    for (const [a, b] of pauses) expect(gaps(r.steps).some((g) => g.atMs > a! && g.atMs < b! && g.ms >= 50)).toBe(true);
    // ... and nowhere else while the load runs (after the start).
    const others = gaps(r.steps).filter((g) => g.atMs > 300 && g.atMs < loadEndMs && !during(g) && g.ms >= 50);
    expect(others).toEqual([]);
    expect(r.steps.some((s) => WAITED(s))).toBe(true);
  });

  it("speeds up once the load is gone (to what a newcomer's small request would tolerate, not to full speed)", () => {
    // With nobody else on the device the probes still wait behind the job's
    // own queue, as a production request arriving would: canary keeps that
    // queue short on purpose, so it does not return to the unthrottled rate.
    // (In this scenario H is, until the next calibration, still the p90 of
    // probes that met production: ~25 MB/s under the load, ~34 after it.)
    const under = r.throughput(2000, loadEndMs);
    const after = r.throughput(loadEndMs + 1500, durationMs);
    expect(after).toBeGreaterThan(1.08 * under);
    expect(after).toBeLessThan(0.5 * 400e6); // the device's rate; unthrottled, the job gets ~390 MB/s
  });

  it('shrinks requests before it shrinks the queue: under load it uses requests smaller than the largest', () => {
    const under = r.steps.filter((s) => s.atNs > 1e9 && s.atNs < loadEndMs * 1e6 && !WAITED(s));
    const small = under.filter((s) => s.blockSize < 1 << 20).length;
    expect(small / under.length).toBeGreaterThan(0.5);
  });

  it('with a fixed target it never pauses to calibrate', () => {
    const c = createController('canary', { targetLatencyMs: 0.5, canary: { calibrate: false } });
    const run = device.run(c, { durationMs: 12_000, probe: PROBE });
    expect(c.report().probes!.calibrations).toBe(0);
    expect(c.report().probes!.targetMs).toBe(0.5);
    expect(run.steps.some((s) => WAITED(s))).toBe(false);
  });

  it('with a fixed target, probes above it are harm: half of them over the target shrinks the job to paced blocks', () => {
    const c = createController('canary', { targetLatencyMs: 1, canary: { calibrate: false } });
    const first = c.decide();
    expect(first.delayMs).toBe(0);
    let t = 0;
    for (let i = 0; i < 400; i++) {
      t += 2e6;
      c.observeProbe({ latencyNs: i % 2 ? 0.5e6 : 2e6, bytes: 4096, atNs: t });
      c.observe({ latencyNs: 3e5, bytes: 65536, atNs: t });
    }
    const d = c.decide();
    expect(d.delayMs).toBeGreaterThan(0);
    expect(d.queueDepth * d.blockSize).toBeLessThan(first.queueDepth * first.blockSize);
    // ... while probes all under the target let it grow.
    const g = createController('canary', { targetLatencyMs: 1, canary: { calibrate: false } });
    t = 0;
    for (let i = 0; i < 400; i++) {
      t += 2e6;
      g.observeProbe({ latencyNs: 0.5e6, bytes: 4096, atNs: t });
    }
    const e = g.decide();
    expect(e.queueDepth * e.blockSize).toBeGreaterThan(first.queueDepth * first.blockSize);
  });

  it('garbage probes are counted and ignored; decisions stay in bounds', () => {
    const c = createController('canary');
    const GARBAGE = [0, -1, NaN, Infinity, -Infinity, 1e15];
    const random = seeded(5);
    let t = 0;
    for (let i = 0; i < 20_000; i++) {
      t += 2e6;
      const g = random() < 0.2;
      c.observeProbe({
        latencyNs: g ? GARBAGE[Math.floor(random() * GARBAGE.length)]! : 1e5 + 1e5 * random(),
        bytes: 4096,
        atNs: t,
      });
      if (i % 7 === 0) c.observe({ latencyNs: 3e5, bytes: 65536, atNs: t });
      const d = c.decide();
      expect(Number.isFinite(d.delayMs) && d.delayMs >= 0 && d.delayMs <= 500).toBe(true);
      expect(d.queueDepth >= 1 && d.queueDepth <= 32 && Number.isInteger(d.queueDepth)).toBe(true);
      expect(d.blockSize % 4096).toBe(0);
    }
    const rep = c.report();
    expect(rep.probes!.invalid).toBeGreaterThan(1000);
    expect(Number.isFinite(rep.probes!.targetMs)).toBe(true);
    // 1e15 ns probes were clamped, not taken as a target: the calibrated
    // target stays within the real probes' range times the factor.
    expect(rep.probes!.targetMs).toBeLessThan(1);
  });

  it('rejects bad canary options with the option named', () => {
    expect(() => createController('canary', { canary: { factor: 0.5 } })).toThrow(/canary\.factor/);
    expect(() => createController('canary', { canary: { quantile: 1 } })).toThrow(/canary\.quantile/);
    expect(() => createController('canary', { canary: { calibrate: 'yes' as unknown as boolean } })).toThrow(
      /canary\.calibrate/,
    );
    expect(() => createController('canary', { canary: { boost: 1 as unknown as boolean } })).toThrow(/canary\.boost/);
    expect(() => createController('canary', { canary: { boostQueueDepth: 0 } })).toThrow(/canary\.boostQueueDepth/);
    expect(() => createController('canary', { canary: { boostCheckEveryMs: -1 } })).toThrow(
      /canary\.boostCheckEveryMs/,
    );
    expect(() => createController('canary', { canary: { resumeBusyWindow: 'yes' as unknown as boolean } })).toThrow(
      /canary\.resumeBusyWindow/,
    );
    expect(() => createController('canary', { canary: { betaBytes: -1 } })).toThrow(/canary\.betaBytes/);
    expect(() => createController('canary', { canary: { calibrationsKept: 0 } })).toThrow(/canary\.calibrationsKept/);
    expect(() => createController('canary', { canary: { calibrationsKept: 1.5 } })).toThrow(/canary\.calibrationsKept/);
    expect(() => createController('canary', { canary: { tailFactor: 0.5 } })).toThrow(
      /canary\.tailFactor: expected 0 \(off\) or a number from 1/,
    );
    expect(() => createController('canary', { canary: { tailShare: 0 } })).toThrow(/canary\.tailShare/);
    expect(() => createController('canary', { canary: { boostQuietChecks: 0 } })).toThrow(/canary\.boostQuietChecks/);
    expect(() => createController('canary', { canary: { lightIops: -1 } })).toThrow(/canary\.lightIops/);
    expect(() => createController('canary', { canary: { lightQueueDepth: 0 } })).toThrow(/canary\.lightQueueDepth/);
    expect(() => createController('canary', { canary: { lightBlockSize: 1.5 } })).toThrow(/canary\.lightBlockSize/);
  });

  it('the tail rule: 5 % of the probes above the idle p90 is the share allowed, but 5 % above twice it shrinks the window', () => {
    // Probes by hand every 2 ms: idle ones (in pauses) 100-190 us, so H is
    // 190 us (and no idle probe is slower: the share allowed is the 5 %
    // floor); while the job runs, 95 % at 100 us and 5 % at 500 us (above
    // 2 H, below the 4 H of the immediate cut).
    const run = (tailFactor?: number): number => {
      const c = createController('canary', { canary: tailFactor === undefined ? {} : { tailFactor } });
      let t = 0;
      let d = c.decide();
      for (let i = 0; t < 6000e6; i++) {
        t += 2e6;
        const us = WAITED(d) ? 100 * (1 + (i % 10) / 10) : i % 20 === 0 ? 500 : 100;
        c.observe({ latencyNs: 100_000, bytes: 65536, atNs: t - 1e6 });
        c.observeProbe({ latencyNs: us * 1e3, bytes: 4096, atNs: t });
        d = c.decide();
      }
      expect(c.report().probes!.targetMs).toBeCloseTo(0.19, 2);
      return d.delayMs > 0 ? 0 : d.queueDepth * d.blockSize;
    };
    const withTail = run();
    const without = run(0);
    // With these probes: paced (one 64 KiB block every 0.78 ms) with the tail rule, 14 x 64 KiB without it.
    expect(withTail).toBe(0);
    expect(without).toBeGreaterThanOrEqual(8 * 65536);
  });

  it('takes its harm latency from the fastest of its last three calibrations: one disturbed calibration does not loosen it, a lasting change is followed', () => {
    // Probes by hand every 2 ms, a calibration every second. Idle probes
    // (those in a calibration pause) take 100-190 us in the first
    // calibration, 6 times that in all later ones; outside the pauses 300 us.
    const run = (calibrationsKept?: number): number[] => {
      const c = createController('canary', {
        canary: { calibrateEveryMs: 1000, ...(calibrationsKept ? { calibrationsKept } : {}) },
      });
      const targets: number[] = [];
      let t = 0;
      for (let i = 0; t < 5500e6; i++) {
        t += 2e6;
        const done = c.report().probes!.calibrations;
        const idle = WAITED(c.decide());
        const us = idle ? (done === 0 ? 1 : 6) * 100 * (1 + (i % 10) / 10) : 300;
        c.observe({ latencyNs: 100_000, bytes: 65536, atNs: t - 1e6 });
        c.observeProbe({ latencyNs: us * 1e3, bytes: 4096, atNs: t });
        const rep = c.report().probes!;
        if (rep.calibrations > done) targets.push(rep.targetMs);
      }
      return targets;
    };
    const kept = run();
    const last = run(1);
    expect(kept.length).toBeGreaterThanOrEqual(5);
    // The p90 of 100-190 us; then of 6 times that.
    expect(kept[0]).toBeCloseTo(0.19, 2);
    expect(last[0]).toBeCloseTo(0.19, 2);
    expect(last[1]).toBeGreaterThan(5 * last[0]!);
    // Kept: the first stays the harm latency while it is among the last three ...
    expect(kept.slice(0, 3)).toEqual([kept[0], kept[0], kept[0]]);
    // ... and a slower storage is followed once it was seen three times.
    expect(kept[3]).toBeGreaterThan(5 * kept[0]!);
  });
});

describe("canary boost: quiet checks with the storage's I/O count", () => {
  // Probes carry the device's completed I/O count, as JobThrottle's do when
  // it finds the storage in sysfs.
  const PROBE_IOS = { everyMs: 2, deviceIos: true };
  // A simulation step carries its decision's fields.
  const BOOSTED = (d: ThrottleDecision): boolean => d.queueDepth === 4 && d.blockSize === 1 << 20 && d.delayMs === 0;
  const burstsOn = (t: number): boolean => t % 6000 < 3000;
  const load = [0, 6000, 12_000, 18_000].map((t) => ({ startMs: t, endMs: t + 3000, iops: 6000 }));
  const phased = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50, load });
  const offPhases = (r: { throughput(a: number, b: number): number }): number =>
    [3000, 9000, 15_000, 21_000].reduce((a, t) => a + r.throughput(t, t + 3000), 0) / 4;

  it('takes the idle phases of a bursty load at a multiple of the rate without it, and never boosts during a burst after the first check', () => {
    const c = createController('canary');
    const r = phased.run(c, { durationMs: 24_000, probe: PROBE_IOS });
    const plain = phased.run(createController('canary', { canary: { boost: false } }), {
      durationMs: 24_000,
      probe: PROBE_IOS,
    });
    // On this device: ~247 against ~37 MB/s (it does 400).
    expect(offPhases(r)).toBeGreaterThan(2 * offPhases(plain));
    const b = c.report().probes!.boost;
    expect(b.deviceCounters).toBe(true);
    expect(b.boostedMs).toBeGreaterThan(6000); // of 12 s of idle phases
    expect(b.busy).toBeGreaterThan(0);
    // A burst is found by the next quiet check, 50 ms apart while boosted
    // (plus the check itself): no boosted block completes later in a burst.
    const late = r.steps.filter((s) => BOOSTED(s) && burstsOn(s.atNs / 1e6) && (s.atNs / 1e6) % 6000 > 100);
    expect(late).toEqual([]);
  });

  it('boosted, a write it did not make ends the boost at the next probe: production meets the boost for a few ms, not until the next check', () => {
    const late = (r: { steps: SimulationStep[] }): number =>
      r.steps.filter((s) => BOOSTED(s) && burstsOn(s.atNs / 1e6) && (s.atNs / 1e6) % 6000 > 30).length;
    const c = createController('canary');
    const withWrites = phased.run(c, { durationMs: 24_000, probe: { ...PROBE_IOS, deviceWrites: true } });
    const checksOnly = phased.run(createController('canary'), { durationMs: 24_000, probe: PROBE_IOS });
    expect(c.report().probes!.boost.endedByWrites).toBeGreaterThan(0);
    expect(late(withWrites)).toBe(0);
    expect(late(checksOnly)).toBeGreaterThan(0);
    const p99 = (r: typeof withWrites): number => r.productionBetween(0, 24_000).percentile(99);
    expect(p99(withWrites)).toBeLessThan(p99(checksOnly));
    expect(offPhases(withWrites)).toBeGreaterThan(
      2 *
        offPhases(
          phased.run(createController('canary', { canary: { boost: false } }), {
            durationMs: 24_000,
            probe: PROBE_IOS,
          }),
        ),
    );
  });

  it('when a boost ends, it goes on from the window it held under the load, not from the one grown while the storage was quiet', () => {
    // Probes by hand, every 2 ms, with the storage's counts: 3 s of a load
    // (10 foreign I/Os and 3 writes per probe; while our blocks run, a
    // quarter of the probes are slow, in pauses none),
    // 1.5 s of quiet (fast probes, no foreign I/O: the window grows, then a
    // check boosts), then the load is back (its first write ends the boost).
    // The job's blocks take 0.1 ms.
    const BLOCK_NS = 100_000;
    const run = (resumeBusyWindow: boolean) => {
      // lightIops 0: the load's first probes would otherwise meet the light
      // load's floor (one 256 KiB request) until they add up to a burst.
      const c = createController('canary', { canary: { resumeBusyWindow, lightIops: 0 } });
      let t = 0;
      let ios = 0;
      let writes = 0;
      const step = (latencyUs: number, foreign: number, foreignWrites: number): ThrottleDecision => {
        t += 2e6;
        ios += 1 + foreign;
        writes += foreignWrites;
        c.observe({ latencyNs: BLOCK_NS, bytes: 65536, atNs: t - 1e6 });
        c.observeProbe({ latencyNs: latencyUs * 1e3, bytes: 4096, atNs: t, deviceIos: ios, deviceWrites: writes });
        return c.decide();
      };
      // Bytes the decision keeps in flight: paced blocks by Little's law.
      const inFlight = (d: ThrottleDecision): number =>
        d.delayMs > 0 ? (d.blockSize * BLOCK_NS) / 1e6 / d.delayMs : d.queueDepth * d.blockSize;
      let last = c.decide();
      for (let k = 0; t < 3000e6; k++) last = step(!WAITED(last) && k % 4 === 0 ? 400 : 150, 10, 3);
      // The quiet begins just after a check (which found the load): the
      // next is 500 ms away, and the window grows until then.
      while (!WAITED(last)) last = step(150, 10, 3);
      while (WAITED(last)) last = step(150, 10, 3);
      const underLoad = inFlight(last);
      const quietFrom = t;
      while (t < quietFrom + 1500e6) step(100, 0, 0);
      const boosted = c.report().probes!.boost.boostedMs;
      // The first decision once the load is back that is neither boosted
      // nor a check's pause (the write ends the boost, or a check that
      // began just before finds the load).
      let d = step(400, 10, 3);
      for (let i = 0; i < 100 && (BOOSTED(d) || WAITED(d)); i++) d = step(400, 10, 3);
      return { underLoad, boosted, back: inFlight(d), stillBoosted: BOOSTED(d) };
    };
    const on = run(true);
    const off = run(false);
    for (const r of [on, off]) {
      expect(r.boosted).toBeGreaterThan(500);
      expect(r.stillBoosted).toBe(false);
    }
    // With these probes: ~22 KB in flight under the load and again after
    // the boost; without the rule 13 MiB (the window grown over the 500 ms
    // of quiet before the check that started the boost).
    expect(on.back).toBeLessThanOrEqual(on.underLoad * 1.01);
    expect(off.back).toBeGreaterThan(4 * on.back);
  });

  it("a steady load, heavy or as light as 20 requests per second, is never boosted, and production's p99 stays as without boost", () => {
    for (const iops of [20, 6000]) {
      const device = new SimulatedDevice({
        bytesPerSecond: 400e6,
        overheadUs: 50,
        load: [{ startMs: 0, endMs: 24_000, iops }],
      });
      const c = createController('canary');
      const r = device.run(c, { durationMs: 24_000, probe: PROBE_IOS });
      const plain = device.run(createController('canary', { canary: { boost: false } }), {
        durationMs: 24_000,
        probe: PROBE_IOS,
      });
      const b = c.report().probes!.boost;
      expect(b.boostedMs).toBe(0);
      expect(b.lightMs).toBe(0);
      expect(b.checks).toBeGreaterThan(20);
      // Every check found the load but a rare quiet one (1 in 55 at 20
      // requests per second), which does not boost: the rate does not look idle.
      expect(b.checks - b.busy).toBeLessThanOrEqual(2);
      expect(r.steps.some(BOOSTED)).toBe(false);
      const p99 = r.productionBetween(0, 24_000).percentile(99);
      expect(p99).toBeLessThan(1.1 * plain.productionBetween(0, 24_000).percentile(99));
      // With canary.lightIops 1000: the light one is light (one request of
      // 256 KiB in flight: production's requests wait about one of them,
      // 50 µs + 655 µs on this device, and the job moves several times as
      // much); the heavy one never.
      const l = createController('canary', { canary: { lightIops: 1000 } });
      const lr = device.run(l, { durationMs: 24_000, probe: PROBE_IOS });
      if (iops === 6000) {
        expect(l.report().probes!.boost.lightMs).toBe(0);
        expect(lr.productionBetween(0, 24_000).percentile(99)).toBeLessThan(1.1 * p99);
      } else {
        expect(l.report().probes!.boost.lightMs).toBeGreaterThan(20_000);
        expect(lr.productionBetween(0, 24_000).percentile(99)).toBeLessThan(p99 + 0.8e6);
        expect(lr.throughput(1000, 24_000)).toBeGreaterThan(3 * r.throughput(1000, 24_000));
      }
    }
    // Taking 100 requests a second for idle, the light load is boosted and
    // its p99 goes up more than tenfold.
    const light = new SimulatedDevice({
      bytesPerSecond: 400e6,
      overheadUs: 50,
      load: [{ startMs: 0, endMs: 24_000, iops: 20 }],
    });
    const one = createController('canary', { canary: { quietIops: 100 } });
    const r = light.run(one, { durationMs: 24_000, probe: PROBE_IOS });
    expect(one.report().probes!.boost.boostedMs).toBeGreaterThan(0);
    expect(r.productionBetween(0, 24_000).percentile(99)).toBeGreaterThan(
      10 *
        light
          .run(createController('canary'), { durationMs: 24_000, probe: PROBE_IOS })
          .productionBetween(0, 24_000)
          .percentile(99),
    );
  });

  it('on an idle device it is boosted within 0.4 s of its start, and it does not pause to calibrate while boosted', () => {
    const idle = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 });
    const c = createController('canary');
    const r = idle.run(c, { durationMs: 12_000, probe: PROBE_IOS });
    const first = r.steps.find((s) => BOOSTED(s));
    expect(first).toBeDefined();
    expect(first!.atNs / 1e6).toBeLessThan(400);
    // The first calibration, at the start; none of the early ones or the one due at 10 s.
    expect(c.report().probes!.calibrations).toBe(1);
    // Under a phased load it calibrates again once a boost has ended.
    const p = createController('canary');
    phased.run(p, { durationMs: 12_000, probe: PROBE_IOS });
    expect(p.report().probes!.calibrations).toBeGreaterThan(1);
  });

  it('a background of 5 requests a second does not hold it back: it is boosted most of the time and moves several times as much', () => {
    const device = new SimulatedDevice({
      bytesPerSecond: 400e6,
      overheadUs: 50,
      load: [{ startMs: 0, endMs: 24_000, iops: 5 }],
    });
    const c = createController('canary');
    const r = device.run(c, { durationMs: 24_000, probe: PROBE_IOS });
    const plain = device.run(createController('canary', { canary: { boost: false } }), {
      durationMs: 24_000,
      probe: PROBE_IOS,
    });
    const b = c.report().probes!.boost;
    // ~20 of 24 s boosted, ~266 against ~80 MB/s of a 400 MB/s device.
    expect(b.boostedMs).toBeGreaterThan(16_000);
    expect(b.busy).toBeGreaterThan(0);
    expect(r.throughput(0, 24_000)).toBeGreaterThan(2.5 * plain.throughput(0, 24_000));
    expect(r.throughput(0, 24_000)).toBeGreaterThan(0.5 * 400e6);
  });

  it("the job's own writes are not someone else's: a job that writes is boosted on an idle device as one that reads, and production's writes still end a boost, later", () => {
    const idle = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 });
    const c = createController('canary');
    const writing = idle.run(c, { durationMs: 5000, probe: { ...PROBE_IOS, jobWrites: true } });
    const reading = idle.run(createController('canary'), { durationMs: 5000, probe: PROBE_IOS });
    expect(c.report().probes!.boost.endedByWrites).toBe(0);
    expect(c.report().probes!.boost.busy).toBe(0);
    expect(writing.throughput(1000, 5000)).toBeGreaterThan(0.95 * reading.throughput(1000, 5000));
    // The phased load, its requests writes, beside a job that writes: its
    // writes are found from bytes, once they exceed what the job's own
    // writes and their allowance for metadata explain.
    const lateBy = (r: { steps: SimulationStep[] }, ms: number): number =>
      r.steps.filter((s) => BOOSTED(s) && burstsOn(s.atNs / 1e6) && (s.atNs / 1e6) % 6000 > ms).length;
    const w = createController('canary');
    const r = phased.run(w, { durationMs: 24_000, probe: { ...PROBE_IOS, deviceWrites: true, jobWrites: true } });
    const plain = phased.run(createController('canary', { canary: { boost: false } }), {
      durationMs: 24_000,
      probe: PROBE_IOS,
    });
    expect(w.report().probes!.boost.busy).toBeGreaterThan(0);
    // Here that takes up to ~1.3 s: the load writes 25 MB/s beside a job
    // writing ~300 MB/s, whose allowance takes ~12 of them.
    expect(lateBy(r, 1500)).toBe(0);
    expect(offPhases(r)).toBeGreaterThan(2 * offPhases(plain));
  });

  it('without the count (no deviceIos on the probes), or with boost off, it never boosts', () => {
    const idle = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 });
    for (const [opts, probe] of [
      [{}, PROBE],
      [{ canary: { boost: false } }, PROBE_IOS],
    ] as const) {
      const c = createController('canary', opts);
      const r = idle.run(c, { durationMs: 5000, probe });
      expect(r.steps.some(BOOSTED)).toBe(false);
      expect(c.report().probes!.boost.boostedMs).toBe(0);
    }
    // On the same idle device with the count, it does, and moves over twice as much.
    const c = createController('canary');
    const r = idle.run(c, { durationMs: 5000, probe: PROBE_IOS });
    const plain = idle.run(createController('canary'), { durationMs: 5000, probe: PROBE });
    expect(r.steps.some(BOOSTED)).toBe(true);
    expect(r.throughput(1000, 5000)).toBeGreaterThan(2 * plain.throughput(1000, 5000));
  });
});

describe("canary: someone else's reads counted while the job runs", () => {
  // Probes carry the device's submitted reads and the job's, as JobThrottle's
  // do on one device right under an O_DIRECT source.
  const COUNTED = { everyMs: 2, deviceIos: true, deviceReads: true };
  const CHECKED = { everyMs: 2, deviceIos: true };
  const boosted = (d: ThrottleDecision): boolean => d.queueDepth >= 4 && d.blockSize === 1 << 20 && d.delayMs === 0;
  const load = [0, 6000, 12_000, 18_000].map((t) => ({ startMs: t, endMs: t + 3000, iops: 6000 }));
  const phased = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50, load });
  const runs = (device: SimulatedDevice) => {
    const counted = createController('canary');
    const checked = createController('canary');
    return {
      counted,
      checked,
      c: device.run(counted, { durationMs: 24_000, probe: COUNTED }),
      k: device.run(checked, { durationMs: 24_000, probe: CHECKED }),
    };
  };

  it('idle: boosted as soon as without counting, with a tenth of the pauses, and moves more', () => {
    const { counted, checked, c, k } = runs(new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 }));
    const b = counted.report().probes!.boost;
    expect(b.running.counted).toBe(true);
    expect(b.running.reads).toBe(0);
    // The first boost, with nothing of someone else's seen, needs ~150 ms of
    // counted time (level 5 %), not the ~345 ms a later one needs (1e-3).
    const firstBoostMs = c.steps.find((s) => boosted(s))!.atNs / 1e6;
    expect(firstBoostMs).toBeLessThan(250);
    expect(firstBoostMs).toBeLessThan(k.steps.find((s) => boosted(s))!.atNs / 1e6);
    expect(b.drainedMs).toBeLessThan(checked.report().probes!.boost.drainedMs / 4);
    // ~376 against ~314 MB/s of a 400 MB/s device.
    expect(c.throughput(0, 24_000)).toBeGreaterThan(1.1 * k.throughput(0, 24_000));
    expect(c.throughput(0, 24_000)).toBeGreaterThan(0.9 * 400e6);
  });

  it("phased: a burst ends the boost within a few ms, production's p99 stays far below what the checks alone allow", () => {
    const { counted, c, k } = runs(phased);
    const b = counted.report().probes!.boost;
    expect(b.running.stopped).toBeUndefined();
    expect(b.boostedMs).toBeGreaterThan(6000);
    const burstsOn = (t: number): boolean => t % 6000 < 3000;
    const late = c.steps.filter((s) => boosted(s) && burstsOn(s.atNs / 1e6) && (s.atNs / 1e6) % 6000 > 20);
    expect(late).toEqual([]);
    // ~0.37 against ~5.3 ms; ~183 against ~143 MB/s.
    expect(c.productionBetween(0, 24_000).percentile(99)).toBeLessThan(
      0.25 * k.productionBetween(0, 24_000).percentile(99),
    );
    expect(c.throughput(0, 24_000)).toBeGreaterThan(k.throughput(0, 24_000));
  });

  it('a background of 5 reads a second is boosted most of the time; a load of 200 never (with canary.lightIops, it is light: one 256 KiB request in flight for a job that does not write there)', () => {
    const bg = runs(
      new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50, load: [{ startMs: 0, endMs: 24_000, iops: 5 }] }),
    );
    expect(bg.counted.report().probes!.boost.boostedMs).toBeGreaterThan(18_000);
    expect(bg.counted.report().probes!.boost.running.reads).toBeGreaterThan(50);
    const light = runs(
      new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50, load: [{ startMs: 0, endMs: 24_000, iops: 200 }] }),
    );
    expect(light.counted.report().probes!.boost.boostedMs).toBe(0);
    expect(light.c.productionBetween(1000, 24_000).percentile(99)).toBeLessThan(
      1.1 * light.k.productionBetween(1000, 24_000).percentile(99),
    );
    // Light off by default.
    expect(light.counted.report().probes!.boost.lightMs).toBe(0);
    // With lightIops 1000, light from its first second (counted and checked
    // alike), ~346 against ~23 MB/s; production's requests wait behind at
    // most one of the job's (p99 ~0.82 against ~0.25 ms on this device,
    // which has no tail of its own).
    const dev = new SimulatedDevice({
      bytesPerSecond: 400e6,
      overheadUs: 50,
      load: [{ startMs: 0, endMs: 24_000, iops: 200 }],
    });
    const LIGHT = { canary: { lightIops: 1000 } };
    const lc = createController('canary', LIGHT);
    const lk = createController('canary', LIGHT);
    const lcr = dev.run(lc, { durationMs: 24_000, probe: COUNTED });
    dev.run(lk, { durationMs: 24_000, probe: CHECKED });
    expect(lc.report().probes!.boost.lightMs).toBeGreaterThan(22_000);
    expect(lk.report().probes!.boost.lightMs).toBeGreaterThan(22_000);
    const strict = light.c;
    expect(lcr.throughput(1000, 24_000)).toBeGreaterThan(0.75 * 400e6);
    expect(lcr.throughput(1000, 24_000)).toBeGreaterThan(5 * strict.throughput(1000, 24_000));
    expect(lcr.productionBetween(1000, 24_000).percentile(99)).toBeLessThan(
      strict.productionBetween(1000, 24_000).percentile(99) + 0.8e6,
    );
    // A job that writes to the storage it protects keeps no floor: in
    // bench:impact's light block its writes took production's p99 up most.
    const writer = createController('canary', LIGHT);
    const w = dev.run(writer, { durationMs: 24_000, probe: { ...COUNTED, jobWrites: true } });
    expect(writer.report().probes!.boost.lightMs).toBeGreaterThan(22_000);
    expect(w.throughput(1000, 24_000)).toBeLessThan(2 * strict.throughput(1000, 24_000));
    // A load of 1500 a second is not light.
    const busier = createController('canary', LIGHT);
    new SimulatedDevice({
      bytesPerSecond: 400e6,
      overheadUs: 50,
      load: [{ startMs: 0, endMs: 24_000, iops: 1500 }],
    }).run(busier, { durationMs: 24_000, probe: COUNTED });
    expect(busier.report().probes!.boost.lightMs).toBe(0);
  });

  it("a device that splits the job's reads looks busy only while the job runs: the checks find it out and counting stops", () => {
    const inner = createController('canary');
    // Every read of the job's counts twice on this device.
    const splitting: ThrottleController = Object.assign(Object.create(inner) as ThrottleController, {
      observeProbe(s: Parameters<ThrottleController['observeProbe']>[0]) {
        inner.observeProbe({
          ...s,
          ...(s.deviceReadsSubmitted !== undefined && s.ownReadsSubmitted !== undefined
            ? { deviceReadsSubmitted: s.deviceReadsSubmitted + s.ownReadsSubmitted }
            : {}),
        });
      },
    });
    new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 }).run(splitting, {
      durationMs: 24_000,
      probe: COUNTED,
    });
    const b = inner.report().probes!.boost;
    expect(b.running.stopped).toMatch(/splits the job's reads/);
    // Boosted all the same, on the checks alone.
    expect(b.boostedMs).toBeGreaterThan(12_000);
  });
});
