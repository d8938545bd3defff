/**
 * `canary` jobs that count the same storage, in this process and in
 * others: each takes the others' reads and writes there for its own, not
 * someone else's. Two backups of disks on one storage, run at once as two
 * commands (or `backup --parallel`), would otherwise each give way to the
 * other as if it were production.
 *
 * Every such job has a small file in a directory on tmpfs (JOBS_DIR), named
 * after its storage's devices, its process and its start, and mapped
 * MAP_SHARED by the job and by every job that reads it:
 * - reads: the job's readers add each read to it (atomically, in the
 *   engine) before they hand it to the kernel, so the count a sibling sees
 *   is never behind what the device was given, as the job's own count is
 *   not (ForeignReads relies on that); the job adds its probes;
 * - the bytes and writes it reported to the storage, and its uploads to a
 *   server on this host, as the job itself counts them (job-throttle.ts).
 * A job maps each sibling's file the first time it sees it and keeps the
 * mapping until it stops: a sibling that ends removes its file, and its
 * final counts stay where the others read them, as its I/O stays in the
 * device's counts. Files of processes that are gone are removed by the
 * next job that joins.
 *
 * Only files owned by the job's user or by root count. Where the directory
 * cannot be used, a job has no siblings.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { native } from '../native.js';

/** Where the jobs' files are (tmpfs: the counters never reach a disk). */
export const JOBS_DIR = '/dev/shm/lowtide-jobs';
const FILE_BYTES = 4096;
const MAGIC = 0x316a_7462_6c74n; // "ltbj1"
const FLAG_EXACT = 1n;
/** A directory changed this recently (ms) is listed at every look. */
const RESCAN_MS = 50;
/** Where the JSON header starts (pid, devices), for people who look. */
const HEADER_AT = 512;

/** The 64-bit counters of a job's file, by index. */
const enum Slot {
  Magic = 0,
  Reads = 1,
  Probes = 2,
  WriteBytes = 3,
  Writes = 4,
  UploadBytes = 5,
  UploadWrites = 6,
  UploadInFlight = 7,
  Flags = 8,
}

/** The reader slot a job's readers count into (NativeReader.shareReads). */
export const READS_SLOT: number = Slot.Reads;

/** What the siblings of a job did so far. */
export interface SiblingCounts {
  /** Their reads handed to the kernel (undefined: one of them does not count them one for one). */
  reads: number | undefined;
  /** Siblings still running. */
  running: number;
  writeBytes: number;
  writes: number;
  /** Their uploads to a server on this host, counted as writes (bytes × the write share, requests, bytes in flight). */
  uploadBytes: number;
  uploadWrites: number;
  uploadInFlight: number;
}

/** A job without a registry, or without siblings yet. */
export const NO_SIBLINGS: Readonly<SiblingCounts> = {
  reads: 0,
  running: 0,
  writeBytes: 0,
  writes: 0,
  uploadBytes: 0,
  uploadWrites: 0,
  uploadInFlight: 0,
};

let seq = 0;

function processStart(pid: number | 'self'): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 22, starttime; the command name (field 2) may hold spaces and parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Removes the files of processes that have gone (or whose pid was reused). */
function removeStale(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^[0-9a-f]{16}-(\d+)-(\d+)-\d+\.job$/.exec(name);
    const stale =
      m === null
        ? name.endsWith('.tmp') && !processStart(Number(name.split('-')[1]))
        : processStart(Number(m[1])) !== m[2];
    if (stale) {
      try {
        fs.unlinkSync(join(dir, name));
      } catch {
        // Another user's file in the sticky directory, or gone already.
      }
    }
  }
}

function u64(a: BigUint64Array, i: number): number {
  return Number(Atomics.load(a, i));
}

export class JobRegistry {
  readonly #dir: string;
  readonly #prefix: string;
  readonly #path: string;
  readonly #name: string;
  /** The job's own counters (map: what its readers count into). */
  readonly map: ArrayBuffer;
  readonly #own: BigUint64Array;
  /** Siblings' counters, by file name, once seen; kept until the job leaves. */
  readonly #seen = new Map<string, BigUint64Array>();
  #dirStamp: bigint | undefined;
  #listed = new Set<string>();
  #left = false;

  private constructor(dir: string, prefix: string, name: string, map: ArrayBuffer) {
    this.#dir = dir;
    this.#prefix = prefix;
    this.#name = name;
    this.#path = join(dir, name);
    this.map = map;
    this.#own = new BigUint64Array(map);
  }

  /**
   * Joins the jobs that count `devices`: creates the job's file. Returns
   * undefined where the directory cannot be used (then the job has no
   * siblings). `exactReads`: the job's reads reach the devices one for one.
   */
  static join(devices: string[], exactReads: boolean, dir = JOBS_DIR): JobRegistry | undefined {
    const start = processStart('self');
    if (start === undefined) return undefined;
    try {
      if (!fs.existsSync(dir)) {
        fs.mkdirSync(dir, { recursive: true, mode: 0o1777 });
        // mkdir's mode is cut by the umask: every user's jobs share the directory.
        fs.chmodSync(dir, 0o1777);
      }
      removeStale(dir);
      const prefix = createHash('sha256').update(devices.join(',')).digest('hex').slice(0, 16);
      const name = `${prefix}-${process.pid}-${start}-${seq++}.job`;
      const body = Buffer.alloc(FILE_BYTES);
      body.writeBigUInt64LE(MAGIC, Slot.Magic * 8);
      body.writeBigUInt64LE(exactReads ? FLAG_EXACT : 0n, Slot.Flags * 8);
      body.write(JSON.stringify({ pid: process.pid, devices }).slice(0, FILE_BYTES - HEADER_AT - 1), HEADER_AT);
      // Written whole under another name first: a sibling never maps half a file.
      const tmp = join(dir, `.${name}.tmp`);
      // O_EXCL: never through a name someone else put there (the directory is everyone's).
      fs.writeFileSync(tmp, body, { mode: 0o644, flag: 'wx' });
      fs.renameSync(tmp, join(dir, name));
      const map = native.mapShared(join(dir, name), true, FILE_BYTES);
      return new JobRegistry(dir, prefix, name, map);
    } catch {
      return undefined;
    }
  }

  /** One probe read, issued now. */
  addProbe(): void {
    if (!this.#left) Atomics.add(this.#own, Slot.Probes, 1n);
  }

  /** Reads the job counted before its file existed (readers attached and gone). */
  addReads(n: number): void {
    if (!this.#left && n > 0) Atomics.add(this.#own, Slot.Reads, BigInt(Math.round(n)));
  }

  /** One write the job reported to the storage. */
  addWrite(bytes: number): void {
    if (this.#left) return;
    Atomics.add(this.#own, Slot.WriteBytes, BigInt(Math.round(bytes)));
    Atomics.add(this.#own, Slot.Writes, 1n);
  }

  /** Its reads no longer reach the devices one for one (a reader that does not count them). */
  inexact(): void {
    if (!this.#left) Atomics.and(this.#own, Slot.Flags, ~FLAG_EXACT);
  }

  /** Its uploads to a server on this host, as counted at its last probe. */
  setUploads(bytes: number, writes: number, inFlight: number): void {
    if (this.#left) return;
    Atomics.store(this.#own, Slot.UploadBytes, BigInt(Math.round(bytes)));
    Atomics.store(this.#own, Slot.UploadWrites, BigInt(Math.round(writes)));
    Atomics.store(this.#own, Slot.UploadInFlight, BigInt(Math.round(inFlight)));
  }

  /** What the siblings did so far: those running, and those seen that have ended. */
  siblings(): SiblingCounts {
    this.#scan();
    const c: SiblingCounts = { ...NO_SIBLINGS };
    for (const [name, a] of this.#seen) {
      const running = this.#listed.has(name);
      if (running) c.running++;
      if (c.reads !== undefined) {
        c.reads =
          (Atomics.load(a, Slot.Flags) & FLAG_EXACT) !== 0n
            ? c.reads + u64(a, Slot.Reads) + u64(a, Slot.Probes)
            : undefined;
      }
      c.writeBytes += u64(a, Slot.WriteBytes);
      c.writes += u64(a, Slot.Writes);
      c.uploadBytes += u64(a, Slot.UploadBytes);
      c.uploadWrites += u64(a, Slot.UploadWrites);
      if (running) c.uploadInFlight += u64(a, Slot.UploadInFlight);
    }
    return c;
  }

  /** Lists the directory when it changed; maps siblings not seen before. */
  #scan(): void {
    let stamp: bigint;
    try {
      stamp = fs.statSync(this.#dir, { bigint: true }).mtimeNs;
    } catch {
      return;
    }
    // The directory's time moves in clock ticks (milliseconds on tmpfs): a
    // change within the tick of the last listing leaves it as it was, so a
    // directory changed in the last RESCAN_MS is listed again.
    if (stamp === this.#dirStamp && Date.now() - Number(stamp / 1_000_000n) > RESCAN_MS) return;
    this.#dirStamp = stamp;
    let names: string[];
    try {
      names = fs.readdirSync(this.#dir);
    } catch {
      return;
    }
    const uid = process.getuid?.() ?? 0;
    this.#listed = new Set();
    for (const name of names) {
      if (name === this.#name || !name.startsWith(this.#prefix) || !name.endsWith('.job')) continue;
      this.#listed.add(name);
      if (this.#seen.has(name)) continue;
      try {
        const path = join(this.#dir, name);
        const st = fs.statSync(path);
        if (st.uid !== uid && st.uid !== 0) continue;
        const a = new BigUint64Array(native.mapShared(path, false, FILE_BYTES));
        if (Atomics.load(a, Slot.Magic) === MAGIC) this.#seen.set(name, a);
      } catch {
        // Gone between the listing and the map: a job that came and went
        // between two probes; its reads look like someone else's once.
      }
    }
  }

  /** Leaves the jobs: removes the file (siblings keep their mapping, and its final counts). */
  leave(): void {
    if (this.#left) return;
    this.#left = true;
    try {
      fs.unlinkSync(this.#path);
    } catch {
      // Removed already (by hand).
    }
  }
}
