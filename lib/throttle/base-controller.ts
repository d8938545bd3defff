/** What every controller shares: sample intake, bounds, and the report. */
import { resolveThrottleOptions, type ResolvedThrottleOptions, type ThrottleOptions } from './controller-options.js';
import { boundDecision } from './decision.js';
import { LatencyEstimator } from './estimator.js';
import { LatencyHistogram } from './histogram.js';
import type {
  ControllerName,
  DistributionEntry,
  LatencySample,
  ThrottleController,
  ThrottleDecision,
  ThrottleReport,
} from './types.js';

interface DistributionCell {
  decisions: number;
  timeNs: number;
}

function distribution(m: Map<number, DistributionCell>): DistributionEntry[] {
  return [...m.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([value, c]) => ({ value, decisions: c.decisions, timeMs: c.timeNs / 1e6 }));
}

/** Sample intake, bounds and reporting shared by all controllers. */
export abstract class BaseController implements ThrottleController {
  abstract readonly name: ControllerName;
  readonly options: ResolvedThrottleOptions;
  readonly latency: LatencyEstimator;
  protected readonly targetNs: number;

  private readonly histogram = new LatencyHistogram();
  /** Bytes of the accepted samples so far. */
  protected bytes = 0;
  private decisions = 0;
  private delayedMs = 0;
  private readonly qdDist = new Map<number, DistributionCell>();
  private readonly bsDist = new Map<number, DistributionCell>();
  private previous: ThrottleDecision | undefined;
  /** When the previous decision was taken; undefined while no sample had come back. */
  private previousAtNs: number | undefined;
  /**
   * When the job started, in the samples' clock: the issue time of the first
   * block (its completion time minus its latency). Decisions taken before any
   * sample count from here, not from the clock's origin (which for a real
   * monotonic clock is the boot time).
   */
  private originNs: number | undefined;

  constructor(options: ThrottleOptions) {
    this.options = resolveThrottleOptions(options);
    this.latency = new LatencyEstimator(this.options.estimator);
    this.targetNs = this.options.targetLatencyMs * 1e6;
  }

  observe(sample: LatencySample): void {
    const s: Partial<LatencySample> = sample ?? {};
    if (this.latency.observe(s.latencyNs as number, s.atNs) === 'invalid') return;
    const v = this.latency.lastNs; // the sanitised (possibly clamped) value
    this.originNs ??= Math.max(0, this.latency.nowNs - v);
    this.histogram.record(v);
    if (typeof s.bytes === 'number' && Number.isFinite(s.bytes) && s.bytes > 0) this.bytes += s.bytes;
    this.onSample(v);
  }

  /** Probes are for `canary`; the other controllers ignore them. */
  observeProbe(_sample: LatencySample): void {}

  probeState(): { latencyNs: number; targetNs: number } | undefined {
    return undefined;
  }

  /** The latest time the controller has seen (sample completion times). */
  protected nowNs(): number {
    return this.latency.nowNs;
  }

  decide(): ThrottleDecision {
    const d = boundDecision(this.current(), this.options);
    const now = this.nowNs();
    // The time since the previous decision was spent under that decision.
    if (this.previous) {
      const from = this.previousAtNs ?? this.originNs ?? now;
      const dt = Math.max(0, now - from);
      this.cell(this.qdDist, this.previous.queueDepth).timeNs += dt;
      this.cell(this.bsDist, this.previous.blockSize).timeNs += dt;
    }
    this.cell(this.qdDist, d.queueDepth).decisions++;
    this.cell(this.bsDist, d.blockSize).decisions++;
    this.decisions++;
    this.delayedMs += d.delayMs;
    this.previous = d;
    this.previousAtNs = this.latency.count > 0 ? now : undefined;
    return d;
  }

  report(): ThrottleReport {
    return {
      controller: this.name,
      targetLatencyMs: this.options.targetLatencyMs,
      samples: this.latency.count,
      invalidSamples: this.latency.invalid,
      clampedSamples: this.latency.clamped,
      bytes: this.bytes,
      decisions: this.decisions,
      delayedMs: this.delayedMs,
      latency: this.histogram.toJSON(),
      queueDepth: distribution(this.qdDist),
      blockSize: distribution(this.bsDist),
    };
  }

  /** Called with every accepted (sanitised) latency, in ns. */
  protected abstract onSample(latencyNs: number): void;
  /** The unbounded decision now; decide() bounds and records it. */
  protected abstract current(): ThrottleDecision;

  private cell(m: Map<number, DistributionCell>, key: number): DistributionCell {
    let c = m.get(key);
    if (!c) {
      c = { decisions: 0, timeNs: 0 };
      m.set(key, c);
    }
    return c;
  }
}
