/**
 * A deterministic discrete-event model of a storage device, for testing and
 * comparing controllers without a disk or a clock.
 *
 * The device: `channels` servers (default 1) fed from one FIFO queue. A
 * request of b bytes occupies a server for overheadUs + b / bytesPerSecond.
 * Head-of-line blocking is what makes a backup hurt production on a real
 * disk, and a FIFO queue has exactly that: every request waits for the
 * work queued before it.
 *
 * The competing load ("production"): open-loop phases, each a Poisson stream
 * of `iops` requests of `bytes` between startMs and endMs. Phases may
 * overlap. Randomness comes from a seeded PRNG, so a run is reproducible.
 *
 * The job ("backup"): run() lets a controller drive it the way a real job
 * does: after each of its completions the controller observes the sample
 * and decides; the job keeps up to queueDepth requests of blockSize bytes in
 * flight and issues each one at least delayMs after the previous one (and,
 * with a RateLimiter, after the limiter's delay).
 */
import type { LatencySample, ThrottleController, ThrottleDecision } from '../../lib/throttle/types.js';
import { seeded } from './helpers.js';
import { LatencyHistogram } from '../../lib/throttle/histogram.js';
import type { RateLimiter } from '../../lib/throttle/limits.js';
import { invalidOption, numberOption } from '../../lib/options.js';

export interface CompetingLoadPhase {
  startMs: number;
  endMs: number;
  /** Mean arrival rate, requests per second (Poisson). */
  iops: number;
  /** Bytes per request (default 4096). */
  bytes?: number;
}

export interface SimulatedDeviceOptions {
  /** Transfer rate of one channel (default 400e6 B/s). */
  bytesPerSecond?: number;
  /** Fixed cost of each request on a channel (default 50 µs). */
  overheadUs?: number;
  /** Requests served at once (default 1). */
  channels?: number;
  /** Competing load (default none). */
  load?: CompetingLoadPhase[];
  /** PRNG seed (default 1). */
  seed?: number;
}

export interface SimulationRunOptions {
  /** Simulated time to run for, ms. */
  durationMs: number;
  /** A fixed cap applied on top of the controller's decisions. */
  rateLimiter?: RateLimiter;
  /** Rewrites each sample before the controller sees it (to inject garbage). */
  transformSample?: (sample: LatencySample, index: number) => LatencySample;
  /** Stop after this many completions of the job (default 10 million). */
  maxSteps?: number;
  /**
   * Probes beside the job, as JobThrottle issues them: one request of
   * `bytes` (default 4096) at a time, the next `everyMs` after the previous
   * completed; each completion goes to controller.observeProbe(), with
   * `deviceIos` (every request the device has completed, as
   * /sys/block/X/stat counts them) when `deviceIos` is true, and with
   * `deviceWrites` and `deviceWriteBytes` (production's requests count as
   * writes) when that is. With `jobWrites`, the job's requests are writes
   * too, and each probe carries the bytes and writes the job completed as
   * `ownWriteBytes` and `ownWrites` (what JobThrottle.ownWrites reports).
   */
  probe?: {
    everyMs: number;
    bytes?: number;
    deviceIos?: boolean;
    deviceWrites?: boolean;
    jobWrites?: boolean;
    /**
     * Each probe also carries `deviceReadsSubmitted` (every read the device
     * was given so far) and `ownReadsSubmitted` (the job's and the probes'),
     * as JobThrottle's do on a storage that counts them one for one.
     */
    deviceReads?: boolean;
  };
}

/** One completion of the job's requests and the decision taken after it. */
export interface SimulationStep {
  atNs: number;
  latencyNs: number;
  bytes: number;
  delayMs: number;
  queueDepth: number;
  blockSize: number;
}

export interface SimulationResult {
  steps: SimulationStep[];
  /** Bytes the job completed. */
  bytes: number;
  /** Latency of the competing load's requests. */
  production: LatencyHistogram;
  durationNs: number;
  /** Job throughput (bytes/s) from completions in [fromMs, toMs). */
  throughput(fromMs: number, toMs: number): number;
  /** Competing-load latencies of requests completed in [fromMs, toMs). */
  productionBetween(fromMs: number, toMs: number): LatencyHistogram;
}

interface Request {
  ours: boolean;
  probe?: boolean;
  bytes: number;
  arrivalNs: number;
}

export class SimulatedDevice {
  readonly bytesPerSecond: number;
  readonly overheadNs: number;
  readonly channels: number;
  readonly load: readonly Required<CompetingLoadPhase>[];
  readonly seed: number;

  constructor(options: SimulatedDeviceOptions = {}) {
    this.bytesPerSecond = numberOption('bytesPerSecond', options.bytesPerSecond, 400e6, 0, Number.MAX_VALUE, true);
    this.overheadNs = numberOption('overheadUs', options.overheadUs, 50, 0, 1e9) * 1e3;
    this.channels = Math.floor(numberOption('channels', options.channels, 1, 1, 1024));
    this.seed = numberOption('seed', options.seed, 1, 0, 2 ** 32);
    this.load = (options.load ?? []).map((p, i) => {
      const startMs = numberOption(`load[${i}].startMs`, p.startMs, 0, 0, Number.MAX_VALUE);
      const endMs = numberOption(`load[${i}].endMs`, p.endMs, Infinity, 0, Number.MAX_VALUE);
      if (endMs < startMs) invalidOption(`load[${i}].endMs`, `a time not before startMs (${startMs})`, endMs);
      return {
        startMs,
        endMs,
        iops: numberOption(`load[${i}].iops`, p.iops, 0, 0, 1e9, true),
        bytes: numberOption(`load[${i}].bytes`, p.bytes, 4096, 0, 1 << 30, true),
      };
    });
  }

  /** Time a request of `bytes` occupies a channel, ns. */
  serviceNs(bytes: number): number {
    return this.overheadNs + (bytes / this.bytesPerSecond) * 1e9;
  }

  /** Runs the job under `controller` from time 0 with a fresh PRNG. */
  run(controller: ThrottleController, options: SimulationRunOptions): SimulationResult {
    const endNs = numberOption('durationMs', options.durationMs, NaN, 0, Number.MAX_VALUE, true) * 1e6;
    const maxSteps = options.maxSteps ?? 10_000_000;
    const random = seeded(this.seed);
    const limiter = options.rateLimiter;

    // Device state.
    const busyUntil = new Float64Array(this.channels).fill(-1); // -1: idle
    const serving: (Request | undefined)[] = new Array<Request | undefined>(this.channels).fill(undefined);
    let queue: Request[] = [];
    let queueHead = 0;

    // Production: the next arrival of each phase (Infinity when over).
    const expNs = (iops: number): number => (-Math.log(1 - random()) / iops) * 1e9;
    const nextArrival = this.load.map((p) => {
      const first = p.startMs * 1e6 + expNs(p.iops);
      return first < p.endMs * 1e6 ? first : Infinity;
    });
    const production = new LatencyHistogram();
    const productionLog: number[] = []; // pairs: completion time, latency

    // Job state.
    const steps: SimulationStep[] = [];
    let decision: ThrottleDecision = controller.decide();
    let inFlight = 0;
    let lastIssueNs = -Infinity;
    let reservedAtNs: number | undefined; // issue time granted by the rate limiter
    let bytesDone = 0;
    let now = 0;

    // Probes.
    const probeEveryNs = options.probe
      ? numberOption('probe.everyMs', options.probe.everyMs, NaN, 0, 1e9) * 1e6
      : Infinity;
    const probeBytes = options.probe ? numberOption('probe.bytes', options.probe.bytes, 4096, 1, 1 << 30) : 0;
    let nextProbeNs = options.probe ? 0 : Infinity;
    const withIos = options.probe?.deviceIos === true;
    const jobWrites = options.probe?.jobWrites === true;
    const withWrites = options.probe?.deviceWrites === true || jobWrites;
    let completedIos = 0;
    let completedWrites = 0;
    let writtenBytes = 0;
    let ownBytes = 0;
    let ownWrites = 0;
    const withReads = options.probe?.deviceReads === true;
    let readsSubmitted = 0;
    let ownReadsSubmitted = 0;

    const start = (ch: number, r: Request): void => {
      serving[ch] = r;
      busyUntil[ch] = now + this.serviceNs(r.bytes);
    };
    const enqueue = (r: Request): void => {
      const write = (r.ours && jobWrites) || (!r.ours && !r.probe && options.probe?.deviceWrites === true);
      if (!write) {
        readsSubmitted++;
        if (r.ours || r.probe) ownReadsSubmitted++;
      }
      for (let ch = 0; ch < this.channels; ch++) {
        if (busyUntil[ch]! < 0) {
          start(ch, r);
          return;
        }
      }
      queue.push(r);
    };
    const nextIssueNs = (): number => lastIssueNs + decision.delayMs * 1e6;

    for (let guard = 0; guard < 1e9; guard++) {
      // 1. Issue the job's requests that may go now.
      while (inFlight < decision.queueDepth && now >= nextIssueNs()) {
        if (limiter) {
          if (reservedAtNs === undefined) reservedAtNs = now + limiter.reserve(decision.blockSize, now) * 1e6;
          if (now < reservedAtNs) break;
          reservedAtNs = undefined;
        }
        enqueue({ ours: true, bytes: decision.blockSize, arrivalNs: now });
        inFlight++;
        lastIssueNs = now;
      }

      // 2. Find the next event.
      let tDone = Infinity;
      let chDone = -1;
      for (let ch = 0; ch < this.channels; ch++) {
        const t = busyUntil[ch]!;
        if (t >= 0 && t < tDone) {
          tDone = t;
          chDone = ch;
        }
      }
      let tArrive = Infinity;
      let phase = -1;
      for (let i = 0; i < nextArrival.length; i++) {
        if (nextArrival[i]! < tArrive) {
          tArrive = nextArrival[i]!;
          phase = i;
        }
      }
      const tIssue = inFlight < decision.queueDepth ? Math.max(nextIssueNs(), reservedAtNs ?? -Infinity) : Infinity;
      const tProbe = nextProbeNs;
      const t = Math.min(tDone, tArrive, tIssue, tProbe);
      if (!(t < endNs) || steps.length >= maxSteps) break;
      now = Math.max(now, t);

      if (t === tDone) {
        // 3a. A completion: free the channel, start the next queued request.
        const r = serving[chDone]!;
        serving[chDone] = undefined;
        busyUntil[chDone] = -1;
        if (queueHead < queue.length) {
          start(chDone, queue[queueHead++]!);
          if (queueHead > 4096 && queueHead * 2 > queue.length) {
            queue = queue.slice(queueHead);
            queueHead = 0;
          }
        }
        const latencyNs = now - r.arrivalNs;
        completedIos++;
        if ((!r.ours && !r.probe && options.probe?.deviceWrites === true) || (r.ours && jobWrites)) {
          completedWrites++;
          writtenBytes += r.bytes;
        }
        if (r.probe) {
          controller.observeProbe({
            latencyNs,
            bytes: r.bytes,
            atNs: now,
            ...(withIos ? { deviceIos: completedIos } : {}),
            ...(withReads ? { deviceReadsSubmitted: readsSubmitted, ownReadsSubmitted } : {}),
            ...(withWrites ? { deviceWrites: completedWrites, deviceWriteBytes: writtenBytes } : {}),
            // The device writes what it is given at once: nothing is left unwritten.
            ...(jobWrites ? { ownWriteBytes: ownBytes, ownWrites, unwrittenBytes: 0 } : {}),
          });
          decision = controller.decide();
          nextProbeNs = now + probeEveryNs;
          continue;
        }
        if (!r.ours) {
          production.record(latencyNs);
          productionLog.push(now, latencyNs);
          continue;
        }
        inFlight--;
        bytesDone += r.bytes;
        if (jobWrites) {
          ownBytes += r.bytes;
          ownWrites++;
        }
        let sample: LatencySample = { latencyNs, bytes: r.bytes, atNs: now };
        if (options.transformSample) sample = options.transformSample(sample, steps.length);
        controller.observe(sample);
        decision = controller.decide();
        steps.push({ atNs: now, latencyNs, bytes: r.bytes, ...decision });
      } else if (t === tProbe) {
        // 3b'. The next probe goes (one at a time: the next is scheduled when it completes).
        enqueue({ ours: false, probe: true, bytes: probeBytes, arrivalNs: now });
        nextProbeNs = Infinity;
      } else if (t === tArrive) {
        // 3b. A production arrival; schedule that phase's next one.
        const p = this.load[phase]!;
        enqueue({ ours: false, bytes: p.bytes, arrivalNs: now });
        const next = now + expNs(p.iops);
        nextArrival[phase] = next < p.endMs * 1e6 ? next : Infinity;
      }
      // 3c. t === tIssue: the loop's first step issues.
    }

    return {
      steps,
      bytes: bytesDone,
      production,
      durationNs: endNs,
      throughput(fromMs: number, toMs: number): number {
        const from = fromMs * 1e6;
        const to = toMs * 1e6;
        let b = 0;
        for (const s of steps) if (s.atNs >= from && s.atNs < to) b += s.bytes;
        return to > from ? b / ((to - from) / 1e9) : 0;
      },
      productionBetween(fromMs: number, toMs: number): LatencyHistogram {
        const h = new LatencyHistogram();
        for (let i = 0; i < productionLog.length; i += 2) {
          const at = productionLog[i]!;
          if (at >= fromMs * 1e6 && at < toMs * 1e6) h.record(productionLog[i + 1]!);
        }
        return h;
      },
    };
  }
}
