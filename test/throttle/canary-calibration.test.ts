/**
 * The canary's calibration rules on their own: the harm latency from idle
 * probes, the lowest of the kept calibrations, when calibrations are due,
 * and when a pause has enough idle probes. Plain numbers, no device.
 */
import { describe, expect, it } from 'vitest';
import {
  HarmCalibration,
  calibrate,
  lowestCalibration,
  probesNeeded,
  type CalibrationOptions,
} from '../../lib/throttle/canary-calibration.js';

const MS = 1e6;
const OPTIONS: CalibrationOptions = {
  calibrate: true,
  factor: 1,
  quantile: 0.9,
  calibrationProbes: 48,
  calibrationsKept: 3,
  calibrateEveryMs: 10_000,
  pauseMs: 300,
  earlyEveryMs: 1000,
};

/** Idle probes 1..n times `unitNs`. */
const ramp = (n: number, unitNs: number): number[] => Array.from({ length: n }, (_, i) => (i + 1) * unitNs);

/** One whole calibration pause at `atNs` with these idle probes. */
function pause(c: HarmCalibration, atNs: number, idleNs: readonly number[]): void {
  c.begin();
  for (const v of idleNs) c.addIdle(v);
  c.finish(atNs);
}

describe('calibrate(): one calibration from idle probes', () => {
  it("H is factor × the idle probes' quantile (nearest rank), and the share is of idle probes slower than H", () => {
    const idle = ramp(10, 1000).reverse(); // order does not matter
    expect(calibrate(idle, 1, 0.9)).toEqual({ harmNs: 10_000, slowShare: 0 });
    expect(calibrate(idle, 1, 0.5)).toEqual({ harmNs: 6000, slowShare: 0.4 });
    expect(calibrate(idle, 1.25, 0.5)).toEqual({ harmNs: 7500, slowShare: 0.3 });
    expect(calibrate(idle, 2, 0.9)).toEqual({ harmNs: 20_000, slowShare: 0 });
    // The p90 of 100 probes is the 91st: 9 of them are slower.
    expect(calibrate(ramp(100, 1), 1, 0.9)).toEqual({ harmNs: 91, slowShare: 0.09 });
  });

  it('does not reorder the probes it is given', () => {
    const idle = [3, 1, 2];
    calibrate(idle, 1, 0.9);
    expect(idle).toEqual([3, 1, 2]);
  });
});

describe('probesNeeded(): idle probes that make a calibration count', () => {
  it('3 / (1 − q) for a quantile q, at least 8, at most what a calibration collects', () => {
    expect(probesNeeded(48, 0.9)).toBeCloseTo(30, 9);
    expect(probesNeeded(48, 0.5)).toBe(8);
    expect(probesNeeded(48, 0.999)).toBe(48);
    expect(probesNeeded(10, 0.9)).toBe(10);
    expect(probesNeeded(4, 0.9)).toBe(8);
  });
});

describe('lowestCalibration(): the one in force among the kept', () => {
  it("is the lowest H, with that calibration's own slow share", () => {
    const kept = [
      { harmNs: 300, slowShare: 0.1 },
      { harmNs: 200, slowShare: 0.3 },
      { harmNs: 900, slowShare: 0 },
    ];
    expect(lowestCalibration(kept)).toEqual({ harmNs: 200, slowShare: 0.3 });
    expect(lowestCalibration([kept[2]!])).toEqual(kept[2]);
  });
});

describe('HarmCalibration', () => {
  it('starts from the H it is given, with no slow share and no calibration', () => {
    const c = new HarmCalibration(OPTIONS, 5 * MS);
    expect([c.harmNs, c.idleSlowShare, c.count]).toEqual([5 * MS, 0, 0]);
  });

  it('with calibrate off, is never due and H stays the given target', () => {
    const c = new HarmCalibration({ ...OPTIONS, calibrate: false }, 0.5 * MS);
    for (const t of [0, 1e9, 1e12]) expect(c.due(t)).toBe(false);
    expect(c.harmNs).toBe(0.5 * MS);
  });

  it('the first is due at the first question, the next ones earlyEveryMs apart until calibrationsKept were taken, then every calibrateEveryMs', () => {
    const c = new HarmCalibration(OPTIONS, 20 * MS);
    const start = 7e9; // any clock origin
    expect(c.due(start)).toBe(true);
    let t = start;
    const gaps: number[] = [];
    for (let k = 0; k < 5; k++) {
      pause(c, t, ramp(48, 1000));
      const from = t;
      while (!c.due(t)) t += MS;
      gaps.push((t - from) / MS);
    }
    expect(gaps).toEqual([1000, 1000, 10_000, 10_000, 10_000]);
    expect(c.count).toBe(5);
  });

  it('earlyEveryMs never makes calibrations rarer than calibrateEveryMs', () => {
    const c = new HarmCalibration({ ...OPTIONS, calibrateEveryMs: 400 }, 20 * MS);
    c.due(0);
    pause(c, 0, ramp(48, 1000));
    expect(c.due(399 * MS)).toBe(false);
    expect(c.due(400 * MS)).toBe(true);
  });

  it('H is the lowest of the last calibrationsKept: one slower calibration does not loosen it, a lasting change is followed', () => {
    const c = new HarmCalibration(OPTIONS, 20 * MS);
    const fast = ramp(48, 1000); // p90: 44 us
    const slow = ramp(48, 6000); // 6 times that
    const harms: number[] = [];
    for (const idle of [fast, slow, slow, slow, slow]) {
      pause(c, 0, idle);
      harms.push(c.harmNs);
    }
    expect(harms).toEqual([44_000, 44_000, 44_000, 264_000, 264_000]);
    // And a faster one takes over at once.
    pause(c, 0, fast);
    expect(c.harmNs).toBe(44_000);
  });

  it("with calibrationsKept 1, H is the last calibration's", () => {
    const c = new HarmCalibration({ ...OPTIONS, calibrationsKept: 1 }, 20 * MS);
    pause(c, 0, ramp(48, 1000));
    pause(c, 0, ramp(48, 6000));
    expect(c.harmNs).toBe(264_000);
  });

  it('the slow share allowed is that of the calibration H came from, not of the latest', () => {
    const c = new HarmCalibration(OPTIONS, 20 * MS);
    // 40 probes at 100 us and 8 at 1 ms: the p90 is 1 ms, none slower.
    pause(c, 0, [...Array<number>(40).fill(100_000), ...Array<number>(8).fill(1 * MS)]);
    expect([c.harmNs, c.idleSlowShare]).toEqual([1 * MS, 0]);
    // Then a faster one with a slow tail: 44 us, 4 of 48 slower.
    pause(c, 0, ramp(48, 1000));
    expect(c.harmNs).toBe(44_000);
    expect(c.idleSlowShare).toBeCloseTo(4 / 48, 12);
    // A slower one after it changes neither.
    pause(c, 0, ramp(48, 2000));
    expect(c.harmNs).toBe(44_000);
    expect(c.idleSlowShare).toBeCloseTo(4 / 48, 12);
  });

  it('a pause with too few idle probes leaves H as it was and is not counted, and the next one is still early', () => {
    const c = new HarmCalibration(OPTIONS, 20 * MS);
    pause(c, 0, ramp(20, 1000)); // the p90 needs about 30
    expect([c.harmNs, c.count]).toEqual([20 * MS, 0]);
    expect(c.due(1000 * MS)).toBe(true);
    pause(c, 1000 * MS, ramp(40, 1000));
    expect(c.count).toBe(1);
    expect(c.harmNs).toBe(37_000);
  });

  it('each pause starts from no idle probes', () => {
    const c = new HarmCalibration(OPTIONS, 20 * MS);
    c.begin();
    for (const v of ramp(20, 1000)) c.addIdle(v);
    c.finish(0); // too few: dropped, not carried into the next
    pause(c, 0, ramp(20, 1000));
    expect(c.count).toBe(0);
  });

  it('a pause is done with calibrationProbes idle probes, or when pauseMs have passed', () => {
    const c = new HarmCalibration({ ...OPTIONS, calibrationProbes: 10 }, 20 * MS);
    c.begin();
    for (const v of ramp(9, 1000)) c.addIdle(v);
    expect(c.done(299 * MS)).toBe(false);
    expect(c.done(300 * MS)).toBe(true);
    c.addIdle(1000);
    expect(c.done(0)).toBe(true);
  });

  it("probes count as idle from twice the job's smoothed latency, at least 10 ms, at most half the pause", () => {
    const c = new HarmCalibration(OPTIONS, 20 * MS);
    expect(c.settleNs(1 * MS)).toBe(10 * MS);
    expect(c.settleNs(30 * MS)).toBe(60 * MS);
    expect(c.settleNs(500 * MS)).toBe(150 * MS);
  });
});
