/**
 * The canary's boost rules on their own: reading the storage's counters,
 * quiet checks, the rate of someone else's I/O that counts as idle,
 * starting, keeping and ending a boost, and the window it goes on from. Plain numbers, no device: each check is a pause with probes
 * every 2 ms, after our blocks drained.
 */
import { describe, expect, it } from 'vitest';
import { CanaryBoost, poissonCdf, type BoostOptions } from '../../lib/throttle/canary-boost.js';

const MS = 1e6;
const OPTIONS: BoostOptions = {
  enabled: true,
  quietChecks: 2,
  checkEveryMs: 500,
  boostCheckEveryMs: 50,
  enterQuietMs: 200,
  stayQuietMs: 10,
  quietIops: 20,
  horizonMs: 3000,
  resumeBusyWindow: true,
};
const START_WINDOW = 256 * 1024;

/** A boost whose probes carry counts, as JobThrottle's do when it finds the storage. */
function withCounters(options: Partial<BoostOptions> = {}): CanaryBoost {
  const b = new CanaryBoost({ ...OPTIONS, ...options }, START_WINDOW);
  b.readCounts(0, { ios });
  return b;
}

let probes = 0;
let ios = 0;

/** One probe at `nowNs` with `foreign` reads of someone else's besides its own, drained. */
function drainedProbe(b: CanaryBoost, nowNs: number, foreign = 0): void {
  probes++;
  ios += 1 + foreign;
  b.readCounts(nowNs, { ios });
  b.observeDrained(nowNs, probes);
}

/**
 * One pause from `atNs`: a probe every 2 ms, each with `foreign` I/Os of
 * someone else's besides its own (or `foreignAt(i)` at the i-th), until
 * the check is done (a calibration pause: `probeCount` probes). Returns
 * when it ended and the window after it.
 */
function pause(
  b: CanaryBoost,
  atNs: number,
  {
    foreign = 0,
    foreignAt = undefined as ((i: number) => number) | undefined,
    window = START_WINDOW,
    kind = 'check' as 'check' | 'calibrate',
    probeCount = 1000,
  } = {},
): { endNs: number; window: number } {
  b.beginPause();
  let now = atNs;
  for (let i = 0; i < probeCount; i++) {
    now += 2 * MS;
    drainedProbe(b, now, foreignAt ? foreignAt(i) : foreign);
    if (kind === 'check' && b.checkDone(now - atNs, now)) break;
  }
  return { endNs: now, window: b.endPause(now, kind, window) };
}

/** Starts a boost from `atNs` on a quiet storage: two quiet checks; returns when. */
function boost(b: CanaryBoost, atNs: number): number {
  const t = pause(b, atNs).endNs;
  return pause(b, t + 50 * MS).endNs;
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
    for (const g of [undefined, NaN, -1, Infinity, '7', null]) expect(b.readCounts(0, { ios: g }).counted).toBe(false);
    expect(b.deviceCounters).toBe(false);
    expect(b.readCounts(0, { ios: 12 }).counted).toBe(true);
    expect(b.deviceCounters).toBe(true);
  });

  it("while the job reports no writes there, every write the storage completes is someone else's, found at once", () => {
    const b = new CanaryBoost(OPTIONS, START_WINDOW);
    expect(b.readCounts(0, { ios: 1, writes: 0 }).foreignWrites).toBe(0);
    expect(b.readCounts(2 * MS, { ios: 5, writes: 2 }).foreignWrites).toBe(2);
    expect(b.readCounts(4 * MS, { ios: 6, writes: 2 }).foreignWrites).toBe(0);
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
    expect(endNs).toBe(3e9 + 4 * MS); // one I/O after the first reading, nothing quiet before it: no boost can follow
    expect(b.checkDue(endNs + 499 * MS)).toBe(false);
    expect(b.checkDue(endNs + 500 * MS)).toBe(true);
  });

  it("a probe's own read is not someone else's: only reads beyond one per probe count", () => {
    const b = withCounters();
    b.beginPause();
    drainedProbe(b, 2 * MS);
    drainedProbe(b, 4 * MS);
    expect(b.checkDone(4 * MS, 4 * MS)).toBe(false);
    b.endPause(4 * MS, 'check', START_WINDOW);
    expect(b.report(4 * MS)).toMatchObject({ checks: 1, busy: 0 });
    b.beginPause();
    drainedProbe(b, 6 * MS);
    drainedProbe(b, 8 * MS, 3);
    expect(b.checkDone(8 * MS, 8 * MS)).toBe(true); // a burst: 3 I/Os in 2 ms
    b.endPause(8 * MS, 'check', START_WINDOW);
    expect(b.report(8 * MS)).toMatchObject({ checks: 2, busy: 1 });
  });

  it("settles 1.25 × the job's recent median latency after the pause began, from 1 to 20 ms", () => {
    const b = withCounters();
    expect(b.settleNs(0.1 * MS)).toBe(1 * MS);
    expect(b.settleNs(8 * MS)).toBe(10 * MS);
    expect(b.settleNs(100 * MS)).toBe(20 * MS);
  });

  it('to start a boost a check waits for enterQuietMs of drained time; it gives up 50 ms after that without it', () => {
    const b = withCounters();
    expect(b.quietNeededNs()).toBe(200 * MS);
    b.beginPause();
    expect(b.checkDone(249 * MS)).toBe(false);
    expect(b.checkDone(250 * MS)).toBe(true);
    // No reading at all is no quiet: a pause without counts is not a check.
    expect(b.endPause(250 * MS, 'check', START_WINDOW)).toBe(START_WINDOW);
    expect(b.report(250 * MS).checks).toBe(0);
  });

  it('the Poisson test: P(N ≤ k) for a mean mu', () => {
    expect(poissonCdf(0, 8)).toBeCloseTo(Math.exp(-8), 12);
    expect(poissonCdf(2, 3)).toBeCloseTo(Math.exp(-3) * (1 + 3 + 4.5), 12);
    expect(poissonCdf(5, 0)).toBe(1);
    expect(poissonCdf(100, 1)).toBe(1);
    // Large means (exp(-mu) underflows past ~745): the normal approximation.
    expect(poissonCdf(1000, 1000)).toBeCloseTo(0.5, 1);
    expect(poissonCdf(3000, 900)).toBeCloseTo(1, 9);
    expect(poissonCdf(800, 1000)).toBeLessThan(1e-9);
  });
});

describe('CanaryBoost: entering, keeping and ending a boost', () => {
  it('two quiet checks start a boost, the second boostCheckEveryMs after the first', () => {
    const b = withCounters();
    const first = pause(b, 0);
    expect(first.endNs).toBe(202 * MS); // the first reading at 2 ms, 200 ms of drained time after it
    expect(b.boosted).toBe(false);
    expect(b.checkDue(first.endNs + 49 * MS)).toBe(false);
    expect(b.checkDue(first.endNs + 50 * MS)).toBe(true);
    pause(b, first.endNs + 50 * MS);
    expect(b.boosted).toBe(true);
    expect(b.report(0).checks).toBe(2);
  });

  it('one quiet check of 200 ms cannot tell 20 I/Os a second from none (1 in 55); a quiet calibration before it adds its time', () => {
    const one = withCounters({ quietChecks: 1 });
    pause(one, 0);
    expect(one.boosted).toBe(false);
    const b = withCounters();
    const t = pause(b, 0, { kind: 'calibrate', probeCount: 150 }).endNs;
    expect(b.boosted).toBe(false); // a calibration is evidence, not a check that starts a boost
    pause(b, t + 50 * MS);
    expect(b.boosted).toBe(true);
  });

  it('a check ends as soon as the horizon passes the test with it (at least a quarter of enterQuietMs)', () => {
    // 300 ms of a quiet calibration: the check needs 45 ms more for
    // exp(-20/s · D) < 1e-3 (D > 345 ms), but a quarter of 200 ms of its own.
    const b = withCounters();
    const t = pause(b, 0, { kind: 'calibrate', probeCount: 151 }).endNs;
    const check = pause(b, t);
    expect(check.endNs - t).toBe(52 * MS); // the first reading at 2 ms, then 50 ms
    expect(b.boosted).toBe(true);
  });

  it('a check whose time is filled goes on for up to 50 ms more when that brings the test within reach', () => {
    // 130 ms of calibration + 200 ms of check is 330 ms, short of 345 ms.
    const b = withCounters();
    const t = pause(b, 0, { kind: 'calibrate', probeCount: 66 }).endNs;
    const check = pause(b, t);
    expect(check.endNs - t).toBeGreaterThan(202 * MS);
    expect(check.endNs - t).toBeLessThan(250 * MS);
    expect(b.boosted).toBe(true);
    // Out of reach (no calibration before it), the check ends at its time.
    const c = withCounters({ quietChecks: 1 });
    expect(pause(c, 0).endNs).toBe(202 * MS);
    expect(c.boosted).toBe(false);
  });

  it('after a quiet calibration the check is due at once; after a busy one, checkEveryMs later', () => {
    const b = withCounters();
    const t = pause(b, 0, { kind: 'calibrate', probeCount: 50 }).endNs;
    expect(b.checkDue(t)).toBe(true);
    const c = withCounters();
    const u = pause(c, 0, { kind: 'calibrate', probeCount: 50, foreignAt: (i) => (i === 10 ? 1 : 0) }).endNs;
    expect(c.checkDue(u + 499 * MS)).toBe(false);
    expect(c.checkDue(u + 500 * MS)).toBe(true);
  });

  it("one of someone else's I/Os between quiet checks takes more quiet time to outweigh", () => {
    const b = withCounters();
    const t = pause(b, 0).endNs;
    const busy = pause(b, t + 50 * MS, { foreignAt: (i) => (i === 50 ? 1 : 0) });
    // It ends there: even 200 ms more of quiet could not outweigh it (1 in 0.5 s).
    expect(busy.endNs - (t + 50 * MS)).toBe(102 * MS);
    expect(b.boosted).toBe(false);
    expect(b.checkDue(busy.endNs + 499 * MS)).toBe(false);
    pause(b, busy.endNs + 500 * MS); // 1 in 0.5 s of drained time
    expect(b.boosted).toBe(true);
  });

  it("a foreign write between two quiet checks counts as someone else's I/O", () => {
    const b = withCounters();
    const t = pause(b, 0).endNs;
    expect(b.foreignWrite(t + 10 * MS, START_WINDOW)).toBe(START_WINDOW);
    pause(b, t + 50 * MS);
    expect(b.boosted).toBe(false);
  });

  /** Checks whenever due for `seconds`, someone else's read every `everyProbes` probes of drained time; the time boosted, ms. */
  function background(everyProbes: number, seconds: number): number {
    const b = withCounters();
    let t = 0;
    while (t < seconds * 1e9) {
      t = b.checkDue(t)
        ? pause(b, t, { foreignAt: () => ((probes + 1) % everyProbes === 0 ? 1 : 0) }).endNs
        : t + 2 * MS;
    }
    return b.report(t).boostedMs;
  }

  it('nobody else is a rate: a background of 5 I/Os a second is boosted, a load of 20 never', () => {
    expect(background(100, 30)).toBeGreaterThan(25_000);
    expect(background(25, 30)).toBe(0);
  });

  it('a burst forgets the quiet checks before it', () => {
    const b = withCounters();
    let t = boost(b, 0);
    t = pause(b, t + 50 * MS, { foreign: 3 }).endNs;
    expect(b.boosted).toBe(false);
    t = pause(b, t + 500 * MS).endNs;
    expect(b.boosted).toBe(false);
    pause(b, t + 50 * MS);
    expect(b.boosted).toBe(true);
  });

  it('boosted, checks come every boostCheckEveryMs and need only stayQuietMs of drained time', () => {
    const b = withCounters();
    const t = boost(b, 0);
    expect(b.boosted).toBe(true);
    expect(b.quietNeededNs()).toBe(10 * MS);
    expect(b.checkDue(t + 49 * MS)).toBe(false);
    const next = pause(b, t + 50 * MS);
    expect(next.endNs - (t + 50 * MS)).toBe(12 * MS);
    expect(b.boosted).toBe(true);
  });

  it("boosted, a lone I/O of someone else's does not end it; one in every check soon does", () => {
    const b = withCounters();
    let t = boost(b, 0);
    t = pause(b, t + 50 * MS, { foreignAt: (i) => (i === 2 ? 1 : 0) }).endNs;
    expect(b.boosted).toBe(true);
    let checks = 0;
    while (b.boosted && checks < 20) {
      t = pause(b, t + 50 * MS, { foreignAt: (i) => (i === 2 ? 1 : 0) }).endNs;
      checks++;
    }
    expect(b.boosted).toBe(false);
    expect(checks).toBeLessThan(6);
  });

  it('ends at a check that sees a burst, and reports the time boosted', () => {
    const b = withCounters();
    let t = boost(b, 0);
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
    const t = boost(b, 0);
    b.foreignWrite(t + 20 * MS, START_WINDOW);
    expect(b.boosted).toBe(false);
    expect(b.report(0).endedByWrites).toBe(1);
    expect(b.checkDue(t + 519 * MS)).toBe(false);
    expect(b.checkDue(t + 520 * MS)).toBe(true);
  });

  it('a check whose probes are too slow to fill stayQuietMs counts for what it saw: quiet, the boost goes on', () => {
    const b = withCounters();
    let t = boost(b, 0);
    t += 50 * MS;
    b.beginPause();
    drainedProbe(b, t + 5 * MS); // one reading, then nothing for 60 ms
    drainedProbe(b, t + 60 * MS);
    expect(b.checkDone(60 * MS, t + 60 * MS)).toBe(true);
    b.endPause(t + 60 * MS, 'check', START_WINDOW);
    expect(b.boosted).toBe(true);
  });

  it('with the boost off, pauses count nothing and nothing starts', () => {
    const b = withCounters({ enabled: false, quietChecks: 1 });
    pause(b, 0);
    pause(b, 300 * MS);
    expect(b.boosted).toBe(false);
    expect(b.report(0)).toMatchObject({ checks: 0, enabled: false, deviceCounters: true });
  });
});

describe('CanaryBoost: the window after a boost (resumeBusyWindow)', () => {
  /** A busy check at window `busy`, then the window grows to `grown` while quiet, a boost, and a busy check ends it. */
  function scenario(options: Partial<BoostOptions>, busy: number, grown: number): number {
    const b = withCounters(options);
    let t = pause(b, 0, { foreign: 3, window: busy }).endNs;
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
    const t = boost(b, 0);
    expect(b.foreignWrite(t + 10 * MS, 8 << 20)).toBe(START_WINDOW);
  });

  it('a write that ends no boost leaves the window as it is', () => {
    expect(withCounters().foreignWrite(0, 8 << 20)).toBe(8 << 20);
  });

  it("a sibling's reads while the job is drained are not someone else's; without the siblings' count they are", () => {
    for (const mode of ['siblings', 'joins during the check', 'not counted'] as const) {
      const b = new CanaryBoost({ ...OPTIONS }, START_WINDOW);
      // Each probe: the job's one read, and 10 of a sibling job's, all given to the device.
      let device = 0;
      let sibling = 0;
      let own = 0;
      let n = 0;
      b.readCounts(0, { ios: 0, deviceReads: 0, ownReads: 0 });
      b.beginPause();
      let t = 0;
      do {
        t += 2 * MS;
        n++;
        own++;
        device++;
        // A sibling that joins during the check read nothing before it.
        if (mode !== 'joins during the check' || n > 5) {
          sibling += 10;
          device += 10;
        }
        b.readCounts(t, {
          ios: device,
          deviceReads: device,
          ownReads: own + sibling,
          ...(mode !== 'not counted' ? { siblingReads: sibling } : {}),
        });
        b.observeDrained(t, n);
      } while (!b.checkDone(t, t) && t < 1000 * MS);
      b.endPause(t, 'check', START_WINDOW);
      expect(b.report(t).busy, mode).toBe(mode === 'not counted' ? 1 : 0);
    }
  });
});
