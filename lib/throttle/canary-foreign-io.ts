/**
 * Someone else's I/O on the storage, from its counters and what the job
 * says it wrote there.
 *
 * Reads: the storage's read count. While the job's reads are drained (a
 * quiet check), every read beyond the probes' is someone else's; the
 * caller does that subtraction over its drained windows.
 *
 * Writes: a job that writes to the storage it protects (an image or a
 * repository on the source's disk, a restore) reports its writes
 * (JobThrottle.ownWrites). The device writes them later (writeback lags
 * the write calls by up to the kernel's dirty backlog) and adds the file
 * system's metadata and journal, so the writes are compared by bytes, not
 * as they happen:
 *
 *     A = device bytes written − (1 + metaShare) · own bytes − metaPerWrite · own writes
 *
 * Without anyone else, A never exceeds its earlier highest value: own data
 * still queued in the page cache makes it lower, its writeback brings it
 * back up at most to where it was. Whatever takes A above its highest
 * value so far is someone else's writes. The device's counts are taken
 * `lagNs` before the job's (a write the device completed shortly before
 * the job was told, an fsync'd chunk, is not someone else's).
 * The allowance for metadata accumulates while the storage is quiet and
 * would hide that much of someone else's writes later; so the highest
 * value is kept within `slackBytes` plus the system's unwritten data
 * (Dirty + Writeback in /proc/meminfo, the most of the job's data that can
 * still reach the storage) of the current A.
 * Until the job reports a write, every write the storage completes is
 * someone else's, counted at once.
 */

export interface ForeignIoOptions {
  /** Metadata and journal bytes allowed per byte the job writes. */
  metaShare: number;
  /** Metadata and journal bytes allowed per write the job reports (a new file's inode, directory entry, fsync). */
  metaPerWrite: number;
  /** How much older the device's counts are than the job's own when compared, ns. */
  lagNs: number;
  /** The highest A is kept within this much (plus the unwritten data) of the current one, bytes. */
  slackBytes: number;
}

export const FOREIGN_IO_DEFAULTS: ForeignIoOptions = {
  metaShare: 0.01,
  metaPerWrite: 32 * 1024,
  lagNs: 50e6,
  slackBytes: 2 << 20,
};

/** The storage's counters and the job's own writes, as a probe carries them. */
export interface StorageReading {
  /** Completed I/Os, reads and writes. */
  ios: number;
  /** The writes alone (undefined: not known, every I/O counts as a read). */
  writes?: number | undefined;
  /** Bytes written. */
  writeBytes?: number | undefined;
  /** Bytes and writes the job reported to this storage so far (undefined: it writes nowhere counted). */
  ownWriteBytes?: number | undefined;
  ownWrites?: number | undefined;
  /** The system's data not yet written (undefined: not known, no bound). */
  unwrittenBytes?: number | undefined;
}

interface DeviceMark {
  atNs: number;
  writes: number;
  writeBytes: number;
  /** The job's own bytes at that reading. */
  own: number;
}

/** A write I/O counted from bytes: the smallest write a file system makes. */
const WRITE_UNIT = 4096;

export class ForeignIo {
  readonly #o: ForeignIoOptions;
  #lastWrites: number | undefined;
  /** Device readings not older than lagNs, and the newest one older (marks[0]). */
  #marks: DeviceMark[] = [];
  /** Highest A so far (before the job's first write: the device's bytes written). */
  #highest: number | undefined;
  #lastLaggedWrites = 0;
  /** Someone else's writes so far: I/Os (estimated from bytes once the job writes) and bytes. */
  #foreignWrites = 0;
  #foreignWriteBytes = 0;
  #reads = 0;
  #jobWrites = false;

  constructor(options: ForeignIoOptions = FOREIGN_IO_DEFAULTS) {
    this.#o = options;
  }

  /** Reads the storage completed so far (every I/O when writes are not known). */
  get reads(): number {
    return this.#reads;
  }

  /** Someone else's writes so far, in I/Os. */
  get foreignWrites(): number {
    return this.#foreignWrites;
  }

  /** Someone else's writes so far, in bytes (counted only while the job writes). */
  get foreignWriteBytes(): number {
    return this.#foreignWriteBytes;
  }

  /**
   * One reading, at `nowNs`. Returns how many of someone else's writes it
   * found since the previous reading.
   */
  observe(nowNs: number, r: StorageReading): number {
    if ((r.ownWriteBytes ?? 0) > 0) this.#jobWrites = true;
    const writes = r.writes;
    this.#reads = writes === undefined ? r.ios : r.ios - writes;
    if (writes === undefined) return 0;
    const before = this.#foreignWrites;
    const own = r.ownWriteBytes ?? 0;
    if (own <= 0 || r.writeBytes === undefined) {
      // The job wrote nothing here (yet): every write is someone else's.
      if (this.#lastWrites !== undefined && writes > this.#lastWrites) this.#foreignWrites += writes - this.#lastWrites;
      this.#lastWrites = writes;
      this.#marks = [{ atNs: nowNs, writes, writeBytes: r.writeBytes ?? 0, own }];
      this.#lastLaggedWrites = writes;
      // Where A stands before the job's first write.
      this.#highest = r.writeBytes;
      return this.#foreignWrites - before;
    }
    this.#lastWrites = writes;
    this.#marks.push({ atNs: nowNs, writes, writeBytes: r.writeBytes, own });
    // The newest reading at least lagNs old; drop those before it.
    let k = 0;
    while (k + 1 < this.#marks.length && this.#marks[k + 1]!.atNs <= nowNs - this.#o.lagNs) k++;
    if (k > 0) this.#marks.splice(0, k);
    const lagged = this.#marks[0]!;
    const a = lagged.writeBytes - (1 + this.#o.metaShare) * own - this.#o.metaPerWrite * (r.ownWrites ?? 0);
    if (this.#highest === undefined) {
      // Bytes written appeared only now, or the job had written already at
      // its first reading: compare from here on, with its data not yet
      // written still to come.
      this.#highest = a + (r.unwrittenBytes ?? 0);
    } else if (a > this.#highest) {
      const bytes = a - this.#highest;
      this.#highest = a;
      this.#foreignWriteBytes += bytes;
      const ios = Math.max(1, Math.min(lagged.writes - this.#lastLaggedWrites, Math.ceil(bytes / WRITE_UNIT)));
      this.#foreignWrites += ios;
    }
    if (r.unwrittenBytes !== undefined) {
      // What may still come of the job's writes in the lagged view: the
      // unwritten data, and what the device wrote since the lagged reading.
      const pending = r.unwrittenBytes + (r.writeBytes - lagged.writeBytes) + this.#o.slackBytes;
      this.#highest = Math.min(this.#highest, a + pending);
    }
    this.#lastLaggedWrites = Math.max(this.#lastLaggedWrites, lagged.writes);
    return this.#foreignWrites - before;
  }

  /** Whether the job has reported writes to this storage. */
  get jobWrites(): boolean {
    return this.#jobWrites;
  }

  /** Someone else's I/O so far that a drained window can count: reads (the probes' among them) and foreign writes. */
  get count(): number {
    return this.#reads + this.#foreignWrites;
  }
}

/**
 * Someone else's reads counted while the job runs, not only in pauses.
 *
 * Where the storage is one device right under an O_DIRECT source
 * (StorageIoCounter.exact), every read the job submits is one read the
 * device is given, and the device counts what it was given (completed,
 * merged and in flight). So D = device reads − the job's reads (its blocks
 * and probes, counted when submitted) is someone else's reads, less the
 * job's reads not yet handed to the device at the moment of reading (a few,
 * never more than its queue). The job's lag only ever lowers D; so whatever
 * takes D above its highest value so far is someone else's.
 *
 * What would break that: reads of the job that never reach the device (a
 * hole in a sparse file, the page cache) make D fall for good and would hide
 * others' reads behind the old highest value; a device that splits the job's
 * reads makes D rise as if others read. The first shows as D far below its
 * highest (more than the queue can explain): counting stops (`broken`). The
 * second is for the caller to find (quiet checks that disagree).
 */
export class ForeignReads {
  /** How far below its highest D may fall (one job's reads not yet handed over), reads. */
  readonly #slack: number;
  #base: number | undefined;
  #highest = 0;
  #last = 0;
  #count = 0;
  #broken: string | undefined;

  constructor(slack: number) {
    this.#slack = slack;
  }

  /** Someone else's reads counted so far. */
  get count(): number {
    return this.#count;
  }

  /** Why counting stopped, or undefined while it counts. */
  get broken(): string | undefined {
    return this.#broken;
  }

  /**
   * One reading (the device's first, then the job's: the reads of `jobs`
   * jobs, each with its own queue not yet handed over). Returns the new
   * reads of someone else's since the last.
   */
  observe(deviceReads: number, ownReads: number, jobs = 1): number {
    if (this.#broken !== undefined) return 0;
    const d = deviceReads - ownReads;
    if (this.#base === undefined) {
      this.#base = d;
      return 0;
    }
    const x = d - this.#base;
    this.#last = x;
    if (x > this.#highest) {
      const n = x - this.#highest;
      this.#highest = x;
      this.#count += n;
      return n;
    }
    if (x < this.#highest - this.#slack * Math.max(1, jobs)) {
      this.#broken = `the job's reads outnumber the device's by ${this.#highest - x} (reads served without the device: holes of a sparse file, or a cache)`;
    }
    return 0;
  }

  /**
   * Counting resumes from the last reading, taken while none of the job's
   * reads was in flight (in a quiet check, after its blocks drained): D was
   * exact there, and a fall of D before it is forgotten.
   */
  rebase(): void {
    if (this.#broken !== undefined || this.#base === undefined) return;
    this.#highest = this.#last;
  }

  /** Counting stops for the rest of the job. */
  stop(reason: string): void {
    this.#broken ??= reason;
  }
}

/**
 * Reads the storage makes for the job's own I/O, explained by the bytes it
 * moves, from a bucket of at most `cap` unused ones; someone else's reads
 * are counted beyond them. What the bucket can hide is bounded by the
 * job's rate, and never more than `cap` at once.
 * - Writes: a file system that allocates the data the job writes reads its
 *   allocation metadata (ext4's block bitmaps and extent tree blocks, one
 *   group of 128 MiB at a time) now and then. Measured: with an image's
 *   output on the source's ext4 disk, 10–25 reads per GiB written, all
 *   someone else's to the counts; with it on tmpfs, one. Two jobs writing
 *   at once come to twice the rate, above `quietIops`, and would never see
 *   the storage idle. One read per 32 MiB written (WRITE_META_BYTES).
 * - Reads on btrfs: an O_DIRECT read looks up its data checksums in the
 *   checksum tree, and leaves not cached are read: 25–77 reads per GiB read
 *   (512 KiB and 1 MiB requests, caches dropped), 24–74 for 256 MiB right
 *   after a mount. One per 8 MiB read (storage-counters.ts,
 *   BTRFS_READ_META_BYTES): where there
 *   are more, the rest count as someone else's, and the job boosts later.
 */
export const WRITE_META_BYTES = 32 * 1024 * 1024;

export class MetaReads {
  readonly #bytesPerRead: number;
  readonly #cap: number;
  #tokens = 0;
  #lastBytes: number | undefined;

  constructor(bytesPerRead = WRITE_META_BYTES, cap = 4) {
    this.#bytesPerRead = bytesPerRead;
    this.#cap = cap;
  }

  /** The bytes the job moved so far (wrote, or read). */
  moved(bytes: number | undefined): void {
    if (bytes === undefined || !(bytes >= 0)) return;
    if (this.#lastBytes !== undefined && bytes > this.#lastBytes) {
      this.#tokens = Math.min(this.#cap, this.#tokens + (bytes - this.#lastBytes) / this.#bytesPerRead);
    }
    this.#lastBytes = Math.max(bytes, this.#lastBytes ?? 0);
  }

  /** `reads` seen beyond the job's: how many of them are someone else's once the bucket explains what it can. */
  peek(reads: number): number {
    return reads - Math.min(reads, Math.floor(this.#tokens));
  }

  /** As peek(), and the reads explained leave the bucket. */
  take(reads: number): number {
    const explained = Math.min(reads, Math.floor(this.#tokens));
    this.#tokens -= explained;
    return reads - explained;
  }
}
