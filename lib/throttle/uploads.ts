/**
 * Uploads to an object storage whose server runs on this host, counted as
 * the job's own writes to the storage it protects.
 *
 * A server on this host (a Ceph RADOS Gateway and its OSD, MinIO) writes
 * what the job uploads to a disk here, and a job whose source is on that
 * disk would otherwise take those writes for someone else's: its quiet
 * checks find "someone" at every upload, and the default throttle gives way
 * to its own backup. So the bytes of every write request, counted when the
 * request starts, are the job's own (ForeignIo compares them by bytes with
 * what the device wrote), and the bytes of requests not yet ended are
 * unwritten data that may still reach the device, as the page cache's are.
 *
 * Which disk the server writes to is not known: it may be another one.
 * So every VERIFY_BYTES of uploads the server acknowledged, the device's
 * bytes written over the same span (beyond the job's own local writes) must
 * come to at least LANDED_SHARE of them; if they do not, the uploads land
 * elsewhere and are not counted from then on (what was counted lowers the
 * comparison for a moment; the unwritten-data bound of ForeignIo makes it
 * forget that within a reading or two).
 */
import type { RemoteWrites } from './types.js';

/** Acknowledged upload bytes between two checks that the device wrote them. */
export const VERIFY_BYTES = 64 * 1024 * 1024;
/** The least share of them the device must have written. */
export const LANDED_SHARE = 0.5;
/**
 * Bytes counted per byte uploaded: a server writes a little more than it is
 * given (its metadata and journal: ~1.3 % more for 16 MiB objects through a
 * Ceph RADOS Gateway on BlueStore), beyond the 1 % ForeignIo allows.
 */
export const UPLOAD_WRITE_SHARE = 1.05;

/** What the uploads add to the job's own writes at one reading. */
export interface UploadView {
  /** Bytes counted as the job's own writes so far. */
  bytes: number;
  /** Write requests counted so far. */
  writes: number;
  /** Bytes of requests in flight (counted, maybe not yet written). */
  inFlight: number;
}

export class UploadsOnThisHost {
  readonly #w: RemoteWrites;
  readonly #baseBytes: number;
  readonly #baseRequests: number;
  #window: { device: number; local: number; acked: number } | undefined;
  #frozen: UploadView | undefined;
  #stopped: string | undefined;

  constructor(w: RemoteWrites) {
    this.#w = w;
    this.#baseBytes = w.bytesStarted - w.bytesInFlight;
    this.#baseRequests = w.requestsStarted;
  }

  /** Why the uploads stopped counting, or undefined while they count. */
  get stopped(): string | undefined {
    return this.#stopped;
  }

  /** Upload bytes counted as the job's own writes so far. */
  get countedBytes(): number {
    return (this.#frozen ?? this.#current()).bytes / UPLOAD_WRITE_SHARE;
  }

  #current(): UploadView {
    const w = this.#w;
    return {
      bytes: UPLOAD_WRITE_SHARE * Math.max(0, w.bytesStarted - this.#baseBytes),
      writes: Math.max(0, w.requestsStarted - this.#baseRequests),
      inFlight: UPLOAD_WRITE_SHARE * w.bytesInFlight,
    };
  }

  /**
   * At a reading of the device: its bytes written so far, and the job's
   * own local writes reported to it so far. Returns what the uploads add.
   */
  view(deviceWriteBytes: number, localOwnBytes: number): UploadView {
    if (this.#frozen) return this.#frozen;
    const w = this.#w;
    const acked = w.bytesStarted - w.bytesInFlight - this.#baseBytes;
    const win = this.#window;
    if (win === undefined) {
      this.#window = { device: deviceWriteBytes, local: localOwnBytes, acked };
    } else if (acked - win.acked >= VERIFY_BYTES) {
      const uploaded = acked - win.acked;
      const landed = deviceWriteBytes - win.device - (localOwnBytes - win.local);
      if (landed < LANDED_SHARE * uploaded) {
        const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
        this.#stopped = `the storage wrote ${mib(Math.max(0, landed))} while the server on this host acknowledged ${mib(uploaded)} of uploads: they land elsewhere`;
        this.#frozen = { ...this.#current(), inFlight: 0 };
        return this.#frozen;
      }
      this.#window = { device: deviceWriteBytes, local: localOwnBytes, acked };
    }
    return this.#current();
  }
}
