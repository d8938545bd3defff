/**
 * Wiring of lib/throttle into jobs: options, the idle-latency probe behind
 * `latencyTarget: 'auto'`, and a JobThrottle that turns every completed block
 * into a controller decision applied to the reader (queue depth, request size,
 * pacing between submissions).
 */
import { LowtideError } from '../errors.js';
import { choiceOption, objectOption } from '../options.js';
import type { BlockReader } from '../io/reader.js';
import type { Source } from '../io/source.js';
import {
  CONTROLLER_NAMES,
  DEFAULT_CONTROLLER,
  createController,
  type ControllerName,
  type ThrottleController,
  type ThrottleDecision,
  type ThrottleReport,
} from '../throttle/controller.js';
import { LatencyHistogram } from '../throttle/histogram.js';
import { autoTargetLatencyMs } from '../throttle/limits.js';

export interface ThrottleSettings {
  /** Controller: 'parda' (default), 'aimd', 'threshold', or 'off' (no control, still measured). */
  throttle?: ControllerName;
  /** Throttling limit in ms, or 'auto' (default): measured from a short idle probe before the job. */
  latencyTarget?: number | 'auto';
  /** Admission limit in ms: no new task starts on a storage whose latency is above it. */
  admissionLimit?: number;
  /** A fixed cap in bytes per second, applied on top of the controller. */
  rateLimit?: number;
}

export interface ResolvedThrottleSettings {
  throttle: ControllerName;
  latencyTarget: number | 'auto';
  admissionLimit: number | undefined;
  rateLimit: number | undefined;
}

function positiveNumber(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new LowtideError('INVALID_ARGUMENT', `${name}: expected a number greater than 0, got ${String(value)}`);
  }
  return value;
}

/** Validates the throttle settings of a job's options (other fields are ignored). */
export function resolveThrottleSettings(settings: unknown): ResolvedThrottleSettings {
  const s = objectOption('throttle settings', settings);
  const throttle = choiceOption<ControllerName>('throttle', s.throttle, CONTROLLER_NAMES, DEFAULT_CONTROLLER);
  const latencyTarget = s.latencyTarget === undefined || s.latencyTarget === 'auto' ? 'auto' : positiveNumber('latencyTarget', s.latencyTarget)!;
  return {
    throttle,
    latencyTarget,
    admissionLimit: positiveNumber('admissionLimit', s.admissionLimit),
    // (Only backupMany() acts on it; single jobs reject it, see singleJobThrottleSettings.)
    rateLimit: positiveNumber('rateLimit', s.rateLimit),
  };
}

/** For a single job: an admission limit would be ignored, so it is an error. */
export function singleJobThrottleSettings(settings: unknown): ResolvedThrottleSettings {
  const r = resolveThrottleSettings(settings);
  if (r.admissionLimit !== undefined) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      'admissionLimit: only backupMany() uses an admission limit (it decides when the next of several jobs starts); a single job has none',
    );
  }
  return r;
}

/**
 * Reads up to `count` blocks one at a time (queue depth 1), spread over the
 * source, and records their latency: the storage's idle latency for this request size.
 */
export async function probeIdleLatency(source: Source, blockSize: number, signal?: AbortSignal, count = 32): Promise<LatencyHistogram> {
  const h = new LatencyHistogram();
  const bs = Math.min(blockSize, Math.floor(source.size / source.sectorSize) * source.sectorSize);
  if (bs <= 0) return h;
  const slots = Math.max(1, Math.floor(source.size / bs));
  const n = Math.min(count, slots);
  const extents = Array.from({ length: n }, (_, i) => ({ offset: Math.floor((i * slots) / n) * bs, length: bs }));
  for await (const b of source.read(extents, { blockSize: bs, queueDepth: 1, maxQueueDepth: 1, heldBuffers: 1, signal })) {
    h.record(b.latencyNs);
  }
  return h;
}

export interface ThrottleBounds {
  maxQueueDepth: number;
  maxBlockSize: number;
  minBlockSize: number;
  alignment: number;
}

export interface JobThrottleReport extends ThrottleReport {
  /** How the target was chosen; with 'auto', the probe's idle latency. */
  target: { mode: 'auto' | 'fixed'; ms: number; idleP50Ms?: number; idleP99Ms?: number };
  rateLimitBytesPerSecond: number | null;
  /** Sum of the pacing intervals in force between submissions (controller delay or rate cap), ms. */
  pacedMs: number;
}

export interface ThrottleState {
  latencyMs: number;
  delayMs: number;
  queueDepth: number;
  blockSize: number;
}

export class JobThrottle {
  readonly controller: ThrottleController;
  readonly #rate: number | undefined;
  readonly #target: JobThrottleReport['target'];
  #decision: ThrottleDecision;
  #reader: BlockReader | undefined;
  #pacedMs = 0;

  private constructor(controller: ThrottleController, target: JobThrottleReport['target'], rate: number | undefined) {
    this.controller = controller;
    this.#target = target;
    this.#rate = rate;
    this.#decision = controller.decide();
  }

  /**
   * Builds the controller for a job. With latencyTarget 'auto' and a source
   * to probe, the target comes from an idle probe of that source; without a
   * source to probe, the controller's default target applies.
   */
  static async create(settings: ResolvedThrottleSettings, bounds: ThrottleBounds, probeSource?: Source, signal?: AbortSignal): Promise<JobThrottle> {
    let target: JobThrottleReport['target'];
    let targetMs: number | undefined;
    if (settings.latencyTarget === 'auto') {
      if (probeSource && settings.throttle !== 'off') {
        const probe = await probeIdleLatency(probeSource, bounds.maxBlockSize, signal);
        if (probe.count > 0) {
          targetMs = autoTargetLatencyMs(probe);
          target = { mode: 'auto', ms: targetMs, idleP50Ms: probe.percentile(50) / 1e6, idleP99Ms: probe.percentile(99) / 1e6 };
        }
      }
    } else {
      targetMs = settings.latencyTarget;
    }
    const controller = createController(settings.throttle, {
      ...(targetMs !== undefined ? { targetLatencyMs: targetMs } : {}),
      maxQueueDepth: bounds.maxQueueDepth,
      maxBlockSize: bounds.maxBlockSize,
      minBlockSize: Math.min(bounds.minBlockSize, bounds.maxBlockSize),
      alignment: bounds.alignment,
    });
    target ??= { mode: targetMs === undefined ? 'auto' : 'fixed', ms: controller.options.targetLatencyMs };
    return new JobThrottle(controller, target, settings.rateLimit);
  }

  /** The decision in force: what the reader should start with. */
  get decision(): ThrottleDecision {
    return this.#decision;
  }

  /** Pacing between submissions: the controller's delay, or the rate cap's, whichever is longer. */
  pacingMs(d: ThrottleDecision = this.#decision): number {
    const rateMs = this.#rate ? (d.blockSize / this.#rate) * 1000 : 0;
    return Math.max(d.delayMs, rateMs);
  }

  /** Options for a reader that starts under this throttle (so that its first reads obey it too). */
  readerOptions(): { blockSize: number; queueDepth: number; pacingMs: number } {
    return { blockSize: this.#decision.blockSize, queueDepth: this.#decision.queueDepth, pacingMs: this.pacingMs() };
  }

  /** Applies the decision in force to a reader, and every later one too. */
  attach(reader: BlockReader): void {
    this.#reader = reader;
    this.#apply();
  }

  #apply(): void {
    const r = this.#reader;
    if (!r) return;
    r.setQueueDepth(this.#decision.queueDepth);
    r.setBlockSize(this.#decision.blockSize);
    r.setPacing(this.pacingMs());
  }

  /** One completed block (read or write): feeds the controller and applies its next decision. */
  observe(latencyNs: number, bytes: number): void {
    this.#pacedMs += this.pacingMs();
    this.controller.observe({ latencyNs, bytes, atNs: Number(process.hrtime.bigint()) });
    const next = this.controller.decide();
    const changed =
      next.queueDepth !== this.#decision.queueDepth ||
      next.blockSize !== this.#decision.blockSize ||
      Math.abs(next.delayMs - this.#decision.delayMs) > 1e-3;
    this.#decision = next;
    if (changed) this.#apply();
  }

  state(): ThrottleState {
    return {
      latencyMs: this.controller.latency.smoothedNs / 1e6,
      delayMs: this.pacingMs(),
      queueDepth: this.#decision.queueDepth,
      blockSize: this.#decision.blockSize,
    };
  }

  report(): JobThrottleReport {
    return {
      ...this.controller.report(),
      target: this.#target,
      rateLimitBytesPerSecond: this.#rate ?? null,
      pacedMs: this.#pacedMs,
    };
  }
}
