/** Shared helpers of the throttle tests (not a test file). */

/** A seeded PRNG (mulberry32) returning [0, 1): tests stay deterministic. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Exact nearest-rank percentile of unsorted values. */
export function exactPercentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const r = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length - 1e-9)));
  return sorted[r - 1]!;
}

/** Spread of values that ignores the extreme 5 % on each side. */
export function spread(values: readonly number[]): number {
  if (values.length === 0) return 0;
  return exactPercentile(values, 95) - exactPercentile(values, 5);
}
