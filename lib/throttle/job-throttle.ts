/**
 * A job's throttle: the controller for its settings, the idle-latency probe
 * behind `latencyTargetMs: 'auto'`, the `canary`'s probes beside the job, and
 * every completed block turned into a decision applied to the reader (queue
 * depth, request size, pacing between submissions).
 *
 * It sees the storage through two narrow interfaces, ProbeTarget and
 * ThrottledReader (an io Source and BlockReader are both), and knows
 * nothing of files or repositories.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createController } from './create-controller.js';
import { LatencyHistogram } from './histogram.js';
import { PROBE_INTERVAL_MS, type ResolvedThrottleSettings } from './job-settings.js';
import { UNPACED_WRITEBACK_STEP_BYTES, autoTargetLatencyMs } from './limits.js';
import { StorageIoCounter, storageDevices } from './storage-counters.js';
import type { RemoteWrites, ThrottleController, ThrottleDecision, ThrottleReport } from './types.js';
import { UploadsOnThisHost } from './uploads.js';
import { JobRegistry, NO_SIBLINGS, READS_SLOT } from './job-registry.js';

/** The storage a job throttles for: something it can read at an offset, timed. */
export interface ProbeTarget {
  /** Where it is (for its storage's I/O counters, and messages). */
  readonly path: string;
  readonly size: number;
  /** Offsets and lengths of reads are multiples of it. */
  readonly sectorSize: number;
  /** Reads `length` bytes at `offset` and discards them; resolves with the read's latency, ns. */
  probe(offset: number, length: number): Promise<number>;
  /** Bytes probe() may read from, when fewer than `size` (a virtual disk: its file, not its guest disk). */
  readonly probeSize?: number;
  /** Whether its reads bypass the page cache (O_DIRECT): every read then reaches the storage. */
  readonly direct?: boolean;
  /** Reads the extents through the block reader, as a job does; each block comes with its latency, ns. */
  read(
    extents: readonly { offset: number; length: number }[],
    options: {
      blockSize: number;
      queueDepth: number;
      maxQueueDepth: number;
      heldBuffers: number;
      signal?: AbortSignal | undefined;
    },
  ): AsyncIterable<{ latencyNs: number }>;
}

/** A reader whose knobs a throttle turns while it runs. */
export interface ThrottledReader {
  setQueueDepth(queueDepth: number): void;
  setBlockSize(blockSize: number): void;
  setPacing(delayMs: number): void;
  /** Reads handed to the kernel so far (completed or in flight), if the reader counts them. */
  submittedReads?(): number;
  /** Counts them into a counter that other processes read (BlockReader.shareReads). */
  shareReads?(map: ArrayBuffer, index: number): void;
}

/**
 * Reads up to `count` blocks one at a time (queue depth 1), spread over the
 * source, and records their latency: the storage's idle latency for this request size.
 */
export async function probeIdleLatency(
  source: ProbeTarget,
  blockSize: number,
  signal?: AbortSignal,
  count = 32,
): Promise<LatencyHistogram> {
  const h = new LatencyHistogram();
  const bs = Math.min(blockSize, Math.floor(source.size / source.sectorSize) * source.sectorSize);
  if (bs <= 0) return h;
  const slots = Math.max(1, Math.floor(source.size / bs));
  const n = Math.min(count, slots);
  const extents = Array.from({ length: n }, (_, i) => ({ offset: Math.floor((i * slots) / n) * bs, length: bs }));
  for await (const b of source.read(extents, {
    blockSize: bs,
    queueDepth: 1,
    maxQueueDepth: 1,
    heldBuffers: 1,
    signal,
  })) {
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

/** Places the probes read, in turn. */
const PROBE_PLACES = 16;

export interface JobThrottleReport extends ThrottleReport {
  /**
   * How the target was chosen. With 'auto': for `canary`, calibrated from
   * idle probes during the job (see probes.targetMs for the last value);
   * for the others, from the idle probe of whole blocks before the job.
   */
  target: { mode: 'auto' | 'fixed'; ms: number; idleP50Ms?: number; idleP99Ms?: number };
  /** `canary` asked for but nothing to probe (e.g. a restore into a file): `parda` ran instead. */
  fallback?: string;
  /** Why the probes stopped before the job ended, if they did. */
  probeError?: string;
  /** `canary`: the devices whose I/O its quiet checks counted (absent: none found, no boost). */
  storageDevices?: string[];
  /** `canary`: bytes the job reported writing to those devices (absent: none). */
  ownWriteBytes?: number;
  /**
   * `canary`: uploads to an object storage server on this host, counted as
   * the job's own writes to those devices (uploads.ts): the bytes counted,
   * and why counting stopped (the device did not write them).
   */
  uploadsOnThisHost?: { countedBytes: number; stopped?: string };
  rateLimitBytesPerSecond: number | null;
  /** Sum of the pacing intervals in force between submissions (controller delay or rate cap), ms. */
  pacedMs: number;
  /**
   * Wall time the controller held the job back, ms: while its decision in
   * force delayed the next block (a pause or paced blocks). The
   * controller's own `delayedMs` is a sum over its decisions.
   */
  heldBackMs: number;
}

export interface ThrottleState {
  latencyMs: number;
  delayMs: number;
  queueDepth: number;
  blockSize: number;
  /** `canary`: smoothed latency of the probes, and their target, ms. */
  probeLatencyMs?: number;
  probeTargetMs?: number;
}

export class JobThrottle {
  readonly controller: ThrottleController;
  readonly #rate: number | undefined;
  readonly #target: JobThrottleReport['target'];
  readonly #probeSource: ProbeTarget | undefined;
  readonly #probeIntervalMs: number;
  readonly #fallback: string | undefined;
  #decision: ThrottleDecision;
  #reader: ThrottledReader | undefined;
  /** Reads submitted by the readers attached before the current one. */
  #earlierReads = 0;
  #pacedMs = 0;
  /** Wall time held back so far, and since when the decision in force holds back (ns). */
  #heldBackNs = 0;
  #heldSinceNs: number | undefined;
  #probing: Promise<void> | undefined;
  #stopped = false;
  /** Aborted by stop(): cuts the wait between two probes short. */
  readonly #wake = new AbortController();
  #probeError: string | undefined;
  /** `canary`: the I/O count of the storage under the probed source, for its quiet checks. */
  #counter: StorageIoCounter | undefined;
  /** The devices under the probed source (looked up once, for ownWrites()). */
  #probedDevices: Set<string> | undefined;
  /** Bytes and writes the job reported to the probed storage. */
  #ownWriteBytes = 0;
  #ownWrites = 0;
  /** Probe reads issued so far (each is one read of the job's). */
  #probesIssued = 0;
  #unwritten: number | undefined;
  #unwrittenOwn = 0;
  /** Uploads to a server on this host, counted as own writes (ownUploads()). */
  #uploads: UploadsOnThisHost | undefined;
  /**
   * The `canary` jobs, of this process and others, that count the same
   * devices (job-registry.ts): their reads and writes there are the job's
   * own too. Undefined until the first probe, or without device counters.
   */
  #registry: JobRegistry | undefined;
  /** Bytes of the blocks the job's readers delivered so far, for storage that reads metadata for them. */
  #readBytes = 0;

  private constructor(
    controller: ThrottleController,
    target: JobThrottleReport['target'],
    rate: number | undefined,
    probeSource: ProbeTarget | undefined,
    fallback: string | undefined,
    probeIntervalMs = PROBE_INTERVAL_MS,
  ) {
    this.controller = controller;
    this.#probeIntervalMs = probeIntervalMs;
    this.#target = target;
    this.#rate = rate;
    this.#probeSource = probeSource;
    this.#fallback = fallback;
    this.#decision = controller.decide();
    if (this.#decision.delayMs > 0) this.#heldSinceNs = Number(process.hrtime.bigint());
  }

  /**
   * Builds the controller for a job. With latencyTargetMs 'auto' and a source
   * to probe, the target comes from an idle probe of that source; without a
   * source to probe, the controller's default target applies.
   */
  static async create(
    settings: ResolvedThrottleSettings,
    bounds: ThrottleBounds,
    probeSource?: ProbeTarget,
    signal?: AbortSignal,
  ): Promise<JobThrottle> {
    const base = {
      maxQueueDepth: bounds.maxQueueDepth,
      maxBlockSize: bounds.maxBlockSize,
      minBlockSize: Math.min(bounds.minBlockSize, bounds.maxBlockSize),
      alignment: bounds.alignment,
    };
    let name = settings.throttle;
    let fallback: string | undefined;
    if (name === 'canary') {
      if (probeSource) {
        // The target is a probe latency: fixed, or calibrated by the controller
        // from idle probes (first at the start, then every few seconds).
        const fixed = settings.latencyTargetMs === 'auto' ? undefined : settings.latencyTargetMs;
        const controller = createController('canary', {
          ...base,
          ...(fixed !== undefined ? { targetLatencyMs: fixed } : {}),
          canary: { ...settings.canaryTuning, calibrate: fixed === undefined },
        });
        const target: JobThrottleReport['target'] = {
          mode: fixed === undefined ? 'auto' : 'fixed',
          ms: controller.options.targetLatencyMs,
        };
        return new JobThrottle(
          controller,
          target,
          settings.rateLimitBytesPerSecond,
          probeSource,
          undefined,
          settings.probeIntervalMs,
        );
      }
      name = 'parda';
      fallback = "canary needs a source to probe and this job has none: parda (on the job's own latency) ran instead";
    }
    let target: JobThrottleReport['target'] | undefined;
    let targetMs: number | undefined;
    if (settings.latencyTargetMs === 'auto') {
      if (probeSource && name !== 'off') {
        const probe = await probeIdleLatency(probeSource, bounds.maxBlockSize, signal);
        if (probe.count > 0) {
          targetMs = autoTargetLatencyMs(probe);
          target = {
            mode: 'auto',
            ms: targetMs,
            idleP50Ms: probe.percentile(50) / 1e6,
            idleP99Ms: probe.percentile(99) / 1e6,
          };
        }
      }
    } else {
      targetMs = settings.latencyTargetMs;
    }
    const controller = createController(name, {
      ...base,
      ...(targetMs !== undefined ? { targetLatencyMs: targetMs } : {}),
      ...(name === 'threshold' ? { threshold: { law: settings.thresholdLaw } } : {}),
    });
    target ??= { mode: targetMs === undefined ? 'auto' : 'fixed', ms: controller.options.targetLatencyMs };
    return new JobThrottle(controller, target, settings.rateLimitBytesPerSecond, undefined, fallback);
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

  /**
   * Applies the decision in force to a reader, and every later one too.
   * A reader replaces the one attached before it, which has finished (its
   * reads stay counted as the job's). Starts the probes of `canary`; call
   * stop() when the job ends.
   */
  attach(reader: ThrottledReader): void {
    const prev = this.#reader;
    // The job's reads so far stay its own: a reader that follows another
    // (a job that reads in passes) starts counting from zero.
    if (prev !== undefined && prev !== reader) this.#earlierReads += prev.submittedReads?.() ?? 0;
    this.#reader = reader;
    if (this.#registry && prev !== reader) this.#shareReads(reader);
    this.#apply();
    this.startProbes();
  }

  /**
   * Starts the probes (canary only; idempotent). attach() does it; a job that
   * applies decisions itself (a writer) calls it before its first block.
   */
  startProbes(): void {
    if (this.#probeSource && !this.#probing && !this.#stopped) this.#probing = this.#probeLoop(this.#probeSource);
  }

  /**
   * Where the job writes, for `canary`'s quiet checks: returns the function
   * to call with the bytes of every write to `path` (a file, a directory
   * the job writes files in, or a block device), once the write returned.
   * Writes to the storage the probes protect are the job's own: the checks
   * do not take them (their writeback, and their metadata within a few %)
   * for someone else's. Writes elsewhere cost nothing to report.
   */
  ownWrites(path: string): (bytes: number) => void {
    if (!this.#probeSource) return () => undefined;
    this.#probedDevices ??= new Set(storageDevices(this.#probeSource.path));
    const probed = this.#probedDevices;
    if (!storageDevices(path).some((d) => probed.has(d))) return () => undefined;
    return (bytes: number): void => {
      if (!(bytes > 0)) return;
      this.#ownWriteBytes += bytes;
      this.#ownWrites++;
      this.#registry?.addWrite(bytes);
    };
  }

  /**
   * A job that uploads to object storage: when the storage's server runs
   * on this host, what it uploads counts as its own writes to the storage
   * the probes protect, while that storage writes at least half of it
   * (uploads.ts). Does nothing for a remote server, without `canary`'s
   * device counters, or when called again.
   */
  async ownUploads(writes: RemoteWrites | undefined): Promise<void> {
    if (writes === undefined || !this.#probeSource || !this.controller.options.canary.boost) return;
    if (this.#uploads !== undefined || !(await writes.onThisHost())) return;
    this.#uploads ??= new UploadsOnThisHost(writes);
  }

  /**
   * How many bytes a job that writes through the page cache lets pile up
   * before it starts their writeback (EarlyWriteback). Unthrottled, 64 MiB.
   * Otherwise what the reader may have in flight (block size × queue depth),
   * and with a rate cap no more than 50 ms of it; at least 256 KiB. The
   * writes then reach the disk at the pace the reads were given, not in
   * bursts that production's requests wait behind. While `canary` is boosted
   * (nobody else on the storage) and there is no rate cap, 64 MiB as well:
   * small steps would only make the file system allocate the output in
   * small pieces, reading its bitmaps more often.
   */
  writebackStepBytes(): number {
    if (this.#rate === undefined && (this.controller.name === 'off' || this.controller.boosted === true))
      return UNPACED_WRITEBACK_STEP_BYTES;
    const d = this.#decision;
    let step = d.blockSize * d.queueDepth;
    if (this.#rate !== undefined) step = Math.min(step, this.#rate * 0.05);
    return Math.min(UNPACED_WRITEBACK_STEP_BYTES, Math.max(256 * 1024, step));
  }

  /** Ends the probes and waits for the one in flight. Idempotent; call before closing the probed source. */
  async stop(): Promise<void> {
    // What this job did stays counted by the siblings that go on.
    this.#registry?.leave();
    this.#stopped = true;
    this.#wake.abort();
    await this.#probing;
    this.#counter?.close();
  }

  async #probeLoop(source: ProbeTarget): Promise<void> {
    const length = Math.max(4096, source.sectorSize);
    const slots = Math.floor(Math.min(source.size, source.probeSize ?? source.size) / length);
    if (slots < 1) {
      this.#probeError = `${source.path} is smaller than one probe (${length} bytes)`;
      return;
    }
    // A fixed set of places, read in turn: after the first round they sit in
    // whatever caches the storage has (a virtual disk's host page cache, a
    // controller's cache), so a probe measures the queue in front of them,
    // which is what the job's requests lengthen, and not the medium's
    // random-read time, which the job does not change. (Random places on a
    // virtual disk's 4 GiB file take ~0.8 ms idle, noise larger than a 3x
    // rise of production's p99; the same places again take the cache-hit
    // latency.)
    const places = Math.min(PROBE_PLACES, slots);
    const offsetOf = (turn: number): number => Math.floor(((turn % places) + 0.5) * (slots / places)) * length;
    const probe = async (offset: number): Promise<number | undefined> => {
      try {
        this.#probesIssued++;
        this.#registry?.addProbe();
        return await source.probe(offset, length);
      } catch (err) {
        // A closed or failing source: the job sees that in its own reads.
        // The controller keeps its last window.
        if (!this.#stopped) this.#probeError = (err as Error).message;
        return undefined;
      }
    };
    // (startProbes() runs this loop once per job.) The job joins the jobs
    // that count its storage before its first probe: every read it makes
    // from here on is one its siblings count as theirs.
    if (this.controller.options.canary.boost) this.#counter = StorageIoCounter.open(source.path);
    if (this.#counter && !this.#stopped) {
      this.#registry = JobRegistry.join(this.#counter.devices, this.#counter.exact && source.direct === true);
      if (this.#registry) {
        // What the readers attached before this one did; the one attached counts from its start.
        this.#registry.addReads(this.#earlierReads);
        if (this.#reader) this.#shareReads(this.#reader);
      }
    }
    // One unreported pass over the places first: the first calibration is
    // taken from the first probes, and a place read for the first time takes
    // the medium's random-read time (above; milliseconds on a disk with
    // heads), which would set the harm latency several times too high.
    for (let turn = 0; turn < places; turn++) {
      if (this.#stopped || (await probe(offsetOf(turn))) === undefined) return;
    }
    let turn = 0;
    while (!this.#stopped) {
      const latencyNs = await probe(offsetOf(turn++));
      if (latencyNs === undefined) return;
      if (this.#stopped) return;
      // Read after the probe completed: the count includes it. Then the
      // job's own reads (after the device's: see ForeignReads).
      const counts = this.#counter?.read();
      const mine = counts !== undefined ? this.#withSiblings() : undefined;
      const ownReads = counts !== undefined && this.#counter!.exact && source.direct === true ? mine!.reads : undefined;
      // Where the storage reads its own metadata for the job's reads: the bytes they moved.
      const readMetaBytes = ownReads !== undefined ? this.#counter!.readMetaBytes : undefined;
      const localBytes = mine?.writeBytes ?? this.#ownWriteBytes;
      const own = counts !== undefined && this.#uploads ? this.#uploads.view(counts.writeBytes, localBytes) : undefined;
      if (own) this.#registry?.setUploads(own.bytes, own.writes, own.inFlight);
      // The job's uploads and its siblings'.
      const sib = mine?.uploads ?? { bytes: 0, writes: 0, inFlight: 0 };
      const up = {
        bytes: (own?.bytes ?? 0) + sib.bytes,
        writes: (own?.writes ?? 0) + sib.writes,
        inFlight: (own?.inFlight ?? 0) + sib.inFlight,
      };
      const ownBytes = localBytes + up.bytes;
      // The system's unwritten data, once a round, plus what the job wrote
      // since (it bounds how much of the job's own writes can still reach
      // the storage), plus its uploads in flight.
      if (ownBytes > 0 && (this.#unwritten === undefined || turn % PROBE_PLACES === 1)) {
        this.#unwritten = this.#counter?.unwrittenBytes();
        this.#unwrittenOwn = localBytes;
      }
      this.controller.observeProbe({
        latencyNs,
        bytes: length,
        atNs: Number(process.hrtime.bigint()),
        // With the job's own writes there so far: writes beyond them are someone else's.
        ...(counts !== undefined
          ? {
              deviceIos: counts.ios,
              ...(ownReads !== undefined
                ? {
                    deviceReadsSubmitted: counts.readsSubmitted,
                    ownReadsSubmitted: ownReads,
                    ownReadsJobs: mine!.jobs,
                    ...(mine!.siblingReads ? { siblingReadsSubmitted: mine!.siblingReads } : {}),
                    deviceMaxRequestBytes: this.#counter!.maxUnsplitBytes,
                    ...(readMetaBytes !== undefined ? { ownReadBytes: this.#readBytes, readMetaBytes } : {}),
                  }
                : {}),
              deviceWrites: counts.writes,
              deviceWriteBytes: counts.writeBytes,
              ownWriteBytes: ownBytes,
              ownWrites: mine!.writes + up.writes,
              ...(this.#unwritten !== undefined
                ? { unwrittenBytes: this.#unwritten + localBytes - this.#unwrittenOwn + up.inFlight }
                : {}),
            }
          : {}),
      });
      this.#decide();
      await sleep(this.#probeIntervalMs, undefined, { signal: this.#wake.signal }).catch(() => undefined);
    }
  }

  /** The job's reader counts its reads into the job's file, for its siblings. */
  #shareReads(reader: ThrottledReader): void {
    if (reader.shareReads === undefined || reader.submittedReads === undefined) this.#registry!.inexact();
    else reader.shareReads(this.#registry!.map, READS_SLOT);
  }

  /**
   * The reads handed to the kernel and the writes reported to the storage
   * so far by this job and its siblings (running and ended, in this process
   * and others: job-registry.ts), and the siblings' uploads to a server on
   * this host. Reads are undefined when a sibling's do not reach the device
   * one for one (a source not read O_DIRECT, or not right on the device) or
   * are not counted.
   */
  #withSiblings(): {
    reads: number | undefined;
    siblingReads: number | undefined;
    jobs: number;
    writeBytes: number;
    writes: number;
    uploads: { bytes: number; writes: number; inFlight: number };
  } {
    const own = this.#ownReadsSubmitted();
    const sib = this.#registry?.siblings() ?? NO_SIBLINGS;
    return {
      reads: own === undefined || sib.reads === undefined ? undefined : own + sib.reads,
      siblingReads: sib.reads,
      jobs: 1 + sib.running,
      writeBytes: this.#ownWriteBytes + sib.writeBytes,
      writes: this.#ownWrites + sib.writes,
      uploads: { bytes: sib.uploadBytes, writes: sib.uploadWrites, inFlight: sib.uploadInFlight },
    };
  }

  /** The job's reads handed to the kernel so far: its reader's and its probes'; undefined if the reader does not count. */
  #ownReadsSubmitted(): number | undefined {
    const r = this.#reader;
    if (r === undefined) return this.#probesIssued;
    if (r.submittedReads === undefined) return undefined;
    return this.#earlierReads + r.submittedReads() + this.#probesIssued;
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
    // A job with a reader observes its reads (a writer, its writes).
    if (this.#reader !== undefined) this.#readBytes += bytes;
    this.#pacedMs += this.pacingMs();
    this.controller.observe({ latencyNs, bytes, atNs: Number(process.hrtime.bigint()) });
    this.#decide();
  }

  #decide(): void {
    const next = this.controller.decide();
    const changed =
      next.queueDepth !== this.#decision.queueDepth ||
      next.blockSize !== this.#decision.blockSize ||
      Math.abs(next.delayMs - this.#decision.delayMs) > 1e-3;
    // A change below 1 µs of delay is not passed on; the decision in force
    // stays the one the reader runs with.
    if (!changed) return;
    const held = next.delayMs > 0;
    if (held !== (this.#heldSinceNs !== undefined)) {
      const now = Number(process.hrtime.bigint());
      if (held) this.#heldSinceNs = now;
      else {
        this.#heldBackNs += now - this.#heldSinceNs!;
        this.#heldSinceNs = undefined;
      }
    }
    this.#decision = next;
    this.#apply();
  }

  state(): ThrottleState {
    const probe = this.controller.probeState();
    return {
      latencyMs: this.controller.latency.smoothedNs / 1e6,
      delayMs: this.pacingMs(),
      queueDepth: this.#decision.queueDepth,
      blockSize: this.#decision.blockSize,
      ...(probe ? { probeLatencyMs: probe.latencyNs / 1e6, probeTargetMs: probe.targetNs / 1e6 } : {}),
    };
  }

  report(): JobThrottleReport {
    const r = this.controller.report();
    return {
      ...r,
      // canary: the probe latency that counts as harm, as last calibrated.
      target: r.probes ? { ...this.#target, ms: r.probes.targetMs } : this.#target,
      rateLimitBytesPerSecond: this.#rate ?? null,
      pacedMs: this.#pacedMs,
      heldBackMs:
        (this.#heldBackNs +
          (this.#heldSinceNs !== undefined ? Number(process.hrtime.bigint()) - this.#heldSinceNs : 0)) /
        1e6,
      ...(this.#fallback !== undefined ? { fallback: this.#fallback } : {}),
      ...(this.#probeError !== undefined ? { probeError: this.#probeError } : {}),
      ...(this.#counter ? { storageDevices: this.#counter.devices } : {}),
      ...(this.#ownWriteBytes > 0 ? { ownWriteBytes: this.#ownWriteBytes } : {}),
      ...(this.#uploads
        ? {
            uploadsOnThisHost: {
              countedBytes: Math.round(this.#uploads.countedBytes),
              ...(this.#uploads.stopped !== undefined ? { stopped: this.#uploads.stopped } : {}),
            },
          }
        : {}),
    };
  }
}
