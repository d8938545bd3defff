/**
 * The canary's boost rules on their own: reading the storage's counters,
 * quiet checks, starting, keeping and ending a boost, and the window it
 * goes on from. Plain numbers, no device: each check is a pause with probes
 * every 2 ms, after our blocks drained.
 */
import { describe, expect, it } from 'vitest';
import { CanaryBoost, type BoostOptions } from '../../lib/throttle/canary-boost.js';

const MS = 1e6;
const OPTIONS: BoostOptions = {
  enabled: true,
  quietChecks: 2,
  checkEveryMs: 500,
  boostCheckEveryMs: 50,
  enterQuietMs: 200,
  stayQuietMs: 10,
  resumeBusyWindow: true,
};
const START_WINDOW = 256 * 1024;

/** A boost whose probes carry counts, as JobThrottle's do when it finds the storage. */
function withCounters(options: Partial<BoostOptions> = {}): CanaryBoost {
  const b = new CanaryBoost({ ...OPTIONS, ...options }, START_WINDOW);
  b.readCounts(0, undefined);
  return b;
}

let probes = 0;
let ios = 0;

/**
 * One pause from `atNs`: a probe every 2 ms, each with `foreign` I/Os of
 * someone else's besides its own, until the check is done (a calibration
 * pause: `probeCount` probes). Returns when it ended and the window after it.
 */
function pause(
  b: CanaryBoost,
  atNs: number,
  { foreign = 0, window = START_WINDOW, kind = 'check' as 'check' | 'calibrate', probeCount = 1000 } = {},
): { endNs: number; window: number } {
  b.beginPause();
  let now = atNs;
  for (let i = 0; i < probeCount; i++) {
    now += 2 * MS;
    probes++;
    ios += 1 + foreign;
    b.observeDrained(now, ios, probes);
    if (kind === 'check' && b.checkDone(now - atNs)) break;
  }
  return { endNs: now, window: b.endPause(now, kind, window) };
}

/** Runs quiet checks whenever due, looking every 2 ms, until `untilNs`; returns the time it stopped. */
function runQuietChecks(b: CanaryBoost, fromNs: number, untilNs: number): number {
  let t = fromNs;
  while (t < untilNs) t = b.checkDue(t) ? pause(b, t).endNs : t + 2 * MS;
  return t;
}

describe("CanaryBoost: the storage's counters", () => {
  it("a probe's counts are taken only when they are counts: garbage is none", () => {
    const b = new CanaryBoost(OPTIONS, START_WINDOW);
    for (const g of [undefined, NaN, -1, Infinity, '7', null]) expect(b.readCounts(g, g).ios).toBeUndefined();
    expect(b.deviceCounters).toBe(false);
    expect(b.readCounts(12, undefined).ios).toBe(12);
    expect(b.deviceCounters).toBe(true);
  });

  it('a write is foreign when the write count grew since the previous probe (the first probe has nothing to compare with)', () => {
    const b = new CanaryBoost(OPTIONS, START_WINDOW);
    expect(b.readCounts(1, 5).foreignWrite).toBe(false);
    expect(b.readCounts(2, 5).foreignWrite).toBe(false);
    expect(b.readCounts(3, 6).foreignWrite).toBe(true);
    // A probe without the write count breaks the comparison.
    expect(b.readCounts(4, undefined).foreignWrite).toBe(false);
    expect(b.readCounts(5, 9).foreignWrite).toBe(false);
    expect(b.readCounts(6, 10).foreignWrite).toBe(true);
  });
});

describe('CanaryBoost: quiet checks', () => {
  it('no check is due without counters, or with the boost off', () => {
    expect(new CanaryBoost(OPTIONS, START_WINDOW).checkDue(0)).toBe(false);
    expect(withCounters({ enabled: false }).checkDue(0)).toBe(false);
  });

  it('the first check is due at once, the next checkEveryMs after a check that found someone', () => {
    const b = withCounters();
    expect(b.checkDue(3e9)).toBe(true);
    const { endNs } = pause(b, 3e9, { foreign: 1 });
    expect(b.checkDue(endNs + 499 * MS)).toBe(false);
    expect(b.checkDue(endNs + 500 * MS)).toBe(true);
  });

  it("a probe's own I/O is not someone else's: only I/O beyond one per probe ends a check at once", () => {
    const b = withCounters();
    b.beginPause();
    b.observeDrained(2 * MS, 100, 1);
    b.observeDrained(4 * MS, 101, 2);
    expect(b.checkDone(4 * MS)).toBe(false);
    b.observeDrained(6 * MS, 103, 3);
    expect(b.checkDone(6 * MS)).toBe(true);
  });

  it("settles 1.25 × the job's recent median latency after the pause began, from 1 to 20 ms", () => {
    const b = withCounters();
    expect(b.settleNs(0.1 * MS)).toBe(1 * MS);
    expect(b.settleNs(8 * MS)).toBe(10 * MS);
    expect(b.settleNs(100 * MS)).toBe(20 * MS);
  });

  it('to start a boost a check needs enterQuietMs of quiet; it gives up 50 ms after that without it', () => {
    const b = withCounters();
    expect(b.quietNeededNs()).toBe(200 * MS);
    b.beginPause();
    expect(b.checkDone(249 * MS)).toBe(false);
    expect(b.checkDone(250 * MS)).toBe(true);
    // No reading at all is no quiet: a pause without counts is not a check.
    expect(b.endPause(250 * MS, 'check', START_WINDOW)).toBe(START_WINDOW);
    expect(b.report(250 * MS).checks).toBe(0);
  });
});

describe('CanaryBoost: entering, keeping and ending a boost', () => {
  it('quietChecks quiet checks in a row start a boost, the second boostCheckEveryMs after the first', () => {
    const b = withCounters();
    const first = pause(b, 0);
    expect(first.endNs).toBe(202 * MS); // the first reading at 2 ms, 200 ms of quiet after it
    expect(b.boosted).toBe(false);
    expect(b.checkDue(first.endNs + 49 * MS)).toBe(false);
    expect(b.checkDue(first.endNs + 50 * MS)).toBe(true);
    pause(b, first.endNs + 50 * MS);
    expect(b.boosted).toBe(true);
    expect(b.report(0).checks).toBe(2);
  });

  it('with quietChecks 1, one quiet check starts it', () => {
    const b = withCounters({ quietChecks: 1 });
    pause(b, 0);
    expect(b.boosted).toBe(true);
  });

  it('a check that finds someone between two quiet ones starts the count again', () => {
    const b = withCounters();
    let t = pause(b, 0).endNs;
    t = pause(b, t + 50 * MS, { foreign: 1 }).endNs;
    expect(b.checkDue(t + 50 * MS)).toBe(false); // back to checkEveryMs
    t = pause(b, t + 500 * MS).endNs;
    expect(b.boosted).toBe(false);
    pause(b, t + 50 * MS);
    expect(b.boosted).toBe(true);
  });

  it('a foreign write between two quiet checks starts the count again', () => {
    const b = withCounters();
    const t = pause(b, 0).endNs;
    expect(b.foreignWrite(t + 10 * MS, START_WINDOW)).toBe(START_WINDOW);
    pause(b, t + 50 * MS);
    expect(b.boosted).toBe(false);
  });

  it('a calibration pause counts what it sees but does not count towards a boost', () => {
    const b = withCounters({ quietChecks: 1 });
    pause(b, 0, { kind: 'calibrate', probeCount: 150 });
    expect(b.boosted).toBe(false);
    expect(b.report(0)).toMatchObject({ checks: 1, busy: 0 });
  });

  it('boosted, checks come every boostCheckEveryMs and need only stayQuietMs of quiet', () => {
    const b = withCounters();
    let t = pause(b, 0).endNs;
    t = pause(b, t + 50 * MS).endNs;
    expect(b.boosted).toBe(true);
    expect(b.quietNeededNs()).toBe(10 * MS);
    expect(b.checkDue(t + 49 * MS)).toBe(false);
    const next = pause(b, t + 50 * MS);
    expect(next.endNs - (t + 50 * MS)).toBe(12 * MS);
    expect(b.boosted).toBe(true);
  });

  it('ends at a check that finds someone, and reports the time boosted', () => {
    const b = withCounters();
    let t = pause(b, 0).endNs;
    t = pause(b, t + 50 * MS).endNs;
    const boostedAt = t;
    t = runQuietChecks(b, t, t + 1000 * MS);
    expect(b.boosted).toBe(true);
    expect(b.report(0).checks).toBeGreaterThan(2 + 15); // a check every 50 ms (+ 12 ms for the check)
    expect(b.report(t).boostedMs).toBeCloseTo((t - boostedAt) / MS, 6);
    while (!b.checkDue(t)) t += 2 * MS;
    const end = pause(b, t, { foreign: 3 });
    expect(b.boosted).toBe(false);
    expect(b.report(end.endNs + 1e9).boostedMs).toBeCloseTo((end.endNs - boostedAt) / MS, 6);
    expect(b.report(0).busy).toBe(1);
  });

  it('ends at a write it did not make, at once, with the next check checkEveryMs later', () => {
    const b = withCounters();
    let t = pause(b, 0).endNs;
    t = pause(b, t + 50 * MS).endNs;
    b.foreignWrite(t + 20 * MS, START_WINDOW);
    expect(b.boosted).toBe(false);
    expect(b.report(0).endedByWrites).toBe(1);
    expect(b.checkDue(t + 519 * MS)).toBe(false);
    expect(b.checkDue(t + 520 * MS)).toBe(true);
  });

  it('ends when a check cannot see stayQuietMs of quiet (probes too slow to fill it)', () => {
    const b = withCounters();
    let t = pause(b, 0).endNs;
    t = pause(b, t + 50 * MS).endNs;
    t += 50 * MS;
    b.beginPause();
    ios += 1;
    b.observeDrained(t + 5 * MS, ios, ++probes); // one reading, then nothing for 60 ms
    expect(b.checkDone(60 * MS)).toBe(true);
    b.endPause(t + 60 * MS, 'check', START_WINDOW);
    expect(b.boosted).toBe(false);
  });

  it('with the boost off, pauses count nothing and nothing starts', () => {
    const b = withCounters({ enabled: false, quietChecks: 1 });
    pause(b, 0);
    expect(b.boosted).toBe(false);
    expect(b.report(0)).toMatchObject({ checks: 0, enabled: false, deviceCounters: true });
  });
});

describe('CanaryBoost: the window after a boost (resumeBusyWindow)', () => {
  /** A busy check at window `busy`, then the window grows to `grown` while quiet, a boost, and a foreign write ends it. */
  function scenario(options: Partial<BoostOptions>, busy: number, grown: number): number {
    const b = withCounters(options);
    let t = pause(b, 0, { foreign: 2, window: busy }).endNs;
    t = pause(b, t + 500 * MS, { window: grown }).endNs;
    t = pause(b, t + 50 * MS, { window: grown }).endNs;
    expect(b.boosted).toBe(true);
    // A busy check while boosted does not move the window held under a load.
    const w = pause(b, t + 50 * MS, { foreign: 2, window: grown }).window;
    expect(b.boosted).toBe(false);
    return w;
  }

  it('goes on from the window held at the last check that found someone, not from the one grown while quiet', () => {
    expect(scenario({}, 40_000, 6 << 20)).toBe(40_000);
    expect(scenario({ resumeBusyWindow: false }, 40_000, 6 << 20)).toBe(6 << 20);
  });

  it('never grows the window: a smaller one stays', () => {
    expect(scenario({}, 1 << 20, 64 * 1024)).toBe(64 * 1024);
  });

  it('before any check found someone, the starting window is the one held under a load', () => {
    const b = withCounters();
    let t = pause(b, 0, { window: 8 << 20 }).endNs;
    t = pause(b, t + 50 * MS, { window: 8 << 20 }).endNs;
    expect(b.foreignWrite(t + 10 * MS, 8 << 20)).toBe(START_WINDOW);
  });

  it('a write that ends no boost leaves the window as it is', () => {
    expect(withCounters().foreignWrite(0, 8 << 20)).toBe(8 << 20);
  });
});
