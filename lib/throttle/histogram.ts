// TEMPORARY stand-in (replaced by the throttle work): exact-enough log buckets.
export class LatencyHistogram {
  #buckets = new Float64Array(64 * 16);
  count = 0;
  min = Infinity;
  max = 0;
  #sum = 0;
  get mean(): number {
    return this.count ? this.#sum / this.count : 0;
  }
  record(ns: number): void {
    if (!Number.isFinite(ns) || ns < 0) return;
    this.count++;
    this.#sum += ns;
    this.min = Math.min(this.min, ns);
    this.max = Math.max(this.max, ns);
    const i = Math.min(this.#buckets.length - 1, Math.floor(Math.log2(ns + 1) * 16));
    this.#buckets[i]!++;
  }
  percentile(p: number): number {
    if (!this.count) return 0;
    const target = (p / 100) * this.count;
    let acc = 0;
    for (let i = 0; i < this.#buckets.length; i++) {
      acc += this.#buckets[i]!;
      if (acc >= target) return Math.min(this.max, 2 ** ((i + 1) / 16) - 1);
    }
    return this.max;
  }
}
