/**
 * Whole chunks from reads that cover them in part: a chunk read in several
 * requests (the throttle shrank them, or only parts of it are used) is
 * copied into a chunk-sized buffer; unread parts are zero, and the metadata
 * changed by exclusions (overlay writes) is applied over it.
 */
import type { Block } from '../../io/reader.js';
import type { Extent } from '../../io/extents.js';
import type { ExtentList } from '../../io/extent-list.js';
import type { OverlayWrite } from '../../fs/plan.js';

/** Bytes of `extents` (sorted, merged) inside chunk i; ask for chunks in increasing order. */
export function coverageCounter(extents: ExtentList, cs: number): (i: number) => number {
  let k = 0;
  return (i: number): number => {
    const start = i * cs;
    const end = start + cs;
    while (k < extents.length && extents.endAt(k) <= start) k++;
    let n = 0;
    for (let j = k; j < extents.length && extents.offsetAt(j) < end; j++) {
      n += Math.min(end, extents.endAt(j)) - Math.max(start, extents.offsetAt(j));
    }
    return n;
  };
}

/** Whether chunk i lies in chunk-aligned extents; ask in increasing order. */
export function membership(chunkAligned: readonly Extent[], cs: number): (i: number) => boolean {
  let k = 0;
  return (i: number): boolean => {
    const at = i * cs;
    while (k < chunkAligned.length && chunkAligned[k]!.offset + chunkAligned[k]!.length <= at) k++;
    return k < chunkAligned.length && chunkAligned[k]!.offset <= at;
  };
}

/** Overlay writes touching [start, start+length); ask in increasing order. */
export function overlayCursor(writes: readonly OverlayWrite[]): (start: number, length: number) => OverlayWrite[] {
  let k = 0;
  return (start: number, length: number): OverlayWrite[] => {
    while (k < writes.length && writes[k]!.offset + writes[k]!.data.length <= start) k++;
    const out: OverlayWrite[] = [];
    for (let j = k; j < writes.length && writes[j]!.offset < start + length; j++) out.push(writes[j]!);
    return out;
  };
}

/**
 * Chunk-sized buffers for chunks assembled from several reads, reused: fresh
 * memory costs page faults (on virtual machines often host-side faults too),
 * and a buffer per chunk also feeds the garbage collector. At most
 * CHUNKS_IN_FLIGHT + 1 (pipeline.ts) are in use at once.
 */
export class AssemblyBuffers {
  readonly #free: Buffer[] = [];
  constructor(private readonly size: number) {}
  /** A zero-filled buffer of `length` (≤ size) bytes. */
  take(length: number): Buffer {
    const b = this.#free.pop();
    if (b === undefined) return Buffer.alloc(this.size).subarray(0, length);
    return b.subarray(0, length).fill(0);
  }
  /** Gives back a buffer take() returned. */
  give(b: Buffer): void {
    this.#free.push(Buffer.from(b.buffer, b.byteOffset, this.size));
  }
}

/** A chunk being assembled: blocks are copied in until every byte to read is there. */
export class PartialChunk {
  #filled = 0;

  constructor(
    readonly index: number,
    readonly start: number,
    readonly buf: Buffer,
    /** Bytes of the chunk that are read. */
    readonly expected: number,
    /** Overlay writes to apply once it is complete. */
    readonly writes: readonly OverlayWrite[],
    /** The parent's digest of this chunk (null: none, or a zero chunk). */
    readonly parentEntry: Buffer | null,
  ) {}

  /** Copies `block` in; true when the chunk is complete (then with the overlay writes applied). */
  add(block: Block): boolean {
    block.data.copy(this.buf, block.offset - this.start);
    this.#filled += block.length;
    if (this.#filled !== this.expected) return false;
    for (const w of this.writes) {
      const from = Math.max(w.offset, this.start);
      const to = Math.min(w.offset + w.data.length, this.start + this.buf.length);
      if (from < to) w.data.copy(this.buf, from - this.start, from - w.offset, to - w.offset);
    }
    return true;
  }
}
