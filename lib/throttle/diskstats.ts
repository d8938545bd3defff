/**
 * The device's own service statistics, from the text of /proc/diskstats
 * (Documentation/admin-guide/iostats.rst in the kernel). These count all I/O
 * on the device, production's included, so they see load that a job's own
 * per-block latency sees only indirectly. Reading the file is the caller's
 * business; this module only parses text and compares two snapshots.
 */

/** The counters of one line of /proc/diskstats. Times are in ms. */
export interface DiskStats {
  major: number;
  minor: number;
  name: string;
  readsCompleted: number;
  readsMerged: number;
  sectorsRead: number;
  msReading: number;
  writesCompleted: number;
  writesMerged: number;
  sectorsWritten: number;
  msWriting: number;
  /** I/Os in flight at the moment of reading (not a counter). */
  inFlight: number;
  /** Time with at least one I/O in flight. */
  msBusy: number;
  /** Σ over time of in-flight I/Os (ms · requests). */
  msWeighted: number;
}

/** What the device did between two snapshots. */
export interface DiskActivity {
  intervalMs: number;
  readsPerSecond: number;
  writesPerSecond: number;
  /** Bytes per second (sectors are 512 bytes in this file, whatever the device). */
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
  /** Mean time a read spent queued and in service, ms (0 with no reads). */
  readAwaitMs: number;
  writeAwaitMs: number;
  /** Fraction of the interval with I/O in flight, 0..1. */
  utilization: number;
  /** Mean number of I/Os in flight. */
  averageQueue: number;
}

const FIELDS = 14; // major, minor, name and the 11 counters every kernel since 2.6 has

/**
 * Parses the text of /proc/diskstats. Lines that are too short or have a
 * non-numeric counter are skipped; the fields newer kernels append
 * (discards, flushes) are ignored.
 */
export function parseDiskstats(text: string): DiskStats[] {
  const out: DiskStats[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < FIELDS) continue;
    const n = f.map((x, i) => (i === 2 ? 0 : Number(x)));
    if (n.some((x, i) => i !== 2 && i < FIELDS && !Number.isSafeInteger(x))) continue;
    out.push({
      major: n[0]!,
      minor: n[1]!,
      name: f[2]!,
      readsCompleted: n[3]!,
      readsMerged: n[4]!,
      sectorsRead: n[5]!,
      msReading: n[6]!,
      writesCompleted: n[7]!,
      writesMerged: n[8]!,
      sectorsWritten: n[9]!,
      msWriting: n[10]!,
      inFlight: n[11]!,
      msBusy: n[12]!,
      msWeighted: n[13]!,
    });
  }
  return out;
}

/**
 * Activity of one device between snapshots `before` and `after` taken
 * `intervalMs` apart. Counters that went backwards (wrapped, or the device
 * was replaced) count as 0.
 */
export function diskActivity(before: DiskStats, after: DiskStats, intervalMs: number): DiskActivity {
  const d = (k: keyof DiskStats): number => {
    const v = (after[k] as number) - (before[k] as number);
    return Number.isFinite(v) && v > 0 ? v : 0;
  };
  const ms = Number.isFinite(intervalMs) && intervalMs > 0 ? intervalMs : 0;
  const perSecond = (v: number): number => (ms > 0 ? (v * 1000) / ms : 0);
  const reads = d('readsCompleted');
  const writes = d('writesCompleted');
  return {
    intervalMs: ms,
    readsPerSecond: perSecond(reads),
    writesPerSecond: perSecond(writes),
    readBytesPerSecond: perSecond(d('sectorsRead') * 512),
    writeBytesPerSecond: perSecond(d('sectorsWritten') * 512),
    readAwaitMs: reads > 0 ? d('msReading') / reads : 0,
    writeAwaitMs: writes > 0 ? d('msWriting') / writes : 0,
    utilization: ms > 0 ? Math.min(1, d('msBusy') / ms) : 0,
    averageQueue: ms > 0 ? d('msWeighted') / ms : 0,
  };
}
