/**
 * Someone else's I/O from the storage's counters and the job's own writes:
 * reads apart from writes, own writes that reach the device late (writeback)
 * or early (reported after the device completed them), their metadata, and
 * someone else's writes among them. Plain numbers, no device.
 */
import { describe, expect, it } from 'vitest';
import {
  ForeignIo,
  ForeignReads,
  FOREIGN_IO_DEFAULTS,
  MetaReads,
  WRITE_META_BYTES,
} from '../../lib/throttle/canary-foreign-io.js';

const MS = 1e6;
const MiB = 1 << 20;

/** A storage and a job writing to it, read every 2 ms. */
class Storage {
  io = new ForeignIo();
  t = 0;
  reads = 0;
  writes = 0;
  writeBytes = 0;
  own = 0;
  ownWrites = 0;
  /** The job's bytes written but not yet on the device. */
  dirty = 0;
  found = 0;

  /** The job writes `bytes` in writes of 1 MiB (they go to the page cache). */
  jobWrites(bytes: number): void {
    for (let left = bytes; left > 0; left -= MiB) {
      this.own += Math.min(MiB, left);
      this.ownWrites++;
      this.dirty += Math.min(MiB, left);
    }
  }

  /** The device writes `bytes` of the job's dirty data in requests of 512 KiB, plus `extra` bytes of metadata. */
  flush(bytes: number, extra = 0): void {
    const b = Math.min(bytes, this.dirty);
    this.dirty -= b;
    this.writeBytes += b + extra;
    this.writes += Math.ceil(b / (512 * 1024)) + (extra > 0 ? 1 : 0);
  }

  /** Someone else writes `n` requests of 4 KiB. */
  foreignWrites(n: number): void {
    this.writes += n;
    this.writeBytes += n * 4096;
  }

  read(): number {
    this.t += 2 * MS;
    const n = this.io.observe(this.t, {
      ios: this.reads + this.writes,
      writes: this.writes,
      writeBytes: this.writeBytes,
      ownWriteBytes: this.own,
      ownWrites: this.ownWrites,
    });
    this.found += n;
    return n;
  }
}

describe('ForeignIo', () => {
  it("reads are the storage's I/Os less its writes; without the write count, every I/O", () => {
    const io = new ForeignIo();
    io.observe(0, { ios: 10, writes: 4 });
    expect(io.reads).toBe(6);
    io.observe(2 * MS, { ios: 12 });
    expect(io.reads).toBe(12);
  });

  it("while the job has written nothing there, every write is someone else's, at the probe that sees it", () => {
    const s = new Storage();
    s.read();
    s.foreignWrites(2);
    expect(s.read()).toBe(2);
    expect(s.read()).toBe(0);
    expect(s.io.foreignWrites).toBe(2);
  });

  it("the job's own writes are not someone else's, however late the device writes them back, metadata and journal included", () => {
    const s = new Storage();
    s.read();
    // 1 GiB in 1 MiB writes; the device writes back 64 MiB at a time, each
    // flush with 0.5 % more for metadata, 100 ms after it was written.
    for (let i = 0; i < 16; i++) {
      s.jobWrites(64 * MiB);
      for (let k = 0; k < 50; k++) s.read();
      s.flush(64 * MiB, 0.005 * 64 * MiB);
      for (let k = 0; k < 50; k++) s.read();
    }
    expect(s.found).toBe(0);
    expect(s.io.foreignWriteBytes).toBe(0);
  });

  it('a job that has written already at its first reading: its data still unwritten then is its own when the device writes it', () => {
    const io = new ForeignIo();
    let t = 0;
    let device = 5000 * MiB;
    const read = (own: number, unwritten: number): number => {
      t += 2 * MS;
      return io.observe(t, {
        ios: 0,
        writes: 0,
        writeBytes: device,
        ownWriteBytes: own,
        ownWrites: 2,
        unwrittenBytes: unwritten,
      });
    };
    // 32 MiB handed over before the first reading (uploads in flight), none on the device yet.
    let found = read(32 * MiB, 32 * MiB);
    for (let k = 0; k < 32; k++) {
      device += MiB;
      found += read(32 * MiB, 32 * MiB - (k + 1) * MiB);
    }
    for (let k = 0; k < 30; k++) found += read(32 * MiB, 0);
    expect(found).toBe(0);
    expect(io.foreignWriteBytes).toBe(0);
    // Someone else's 4 MiB after that are found.
    device += 4 * MiB;
    for (let k = 0; k < 30; k++) found += read(32 * MiB, 0);
    expect(io.foreignWriteBytes).toBeGreaterThan(3 * MiB);
  });

  it("a write the device completed just before the job was told (an fsync'd file) is the job's", () => {
    const s = new Storage();
    s.read();
    s.jobWrites(MiB);
    s.read();
    // The next one reaches the device first, the job hears of it 20 ms later.
    s.dirty += MiB;
    s.flush(2 * MiB, 16 * 1024);
    for (let k = 0; k < 10; k++) s.read();
    s.own += MiB;
    s.ownWrites++;
    for (let k = 0; k < 50; k++) s.read();
    expect(s.found).toBe(0);
  });

  it("someone else's writes among the job's are found once the device has written more than the job's data explains", () => {
    const s = new Storage();
    s.read();
    s.jobWrites(64 * MiB);
    s.flush(32 * MiB);
    for (let k = 0; k < 30; k++) s.read();
    // 2 MiB of someone else's while 32 MiB of ours are still dirty: nothing
    // to tell yet, the device has written less than we did.
    s.foreignWrites(512);
    for (let k = 0; k < 30; k++) s.read();
    expect(s.found).toBe(0);
    // Our backlog written: the device wrote 2 MiB more than our writes and
    // their allowance (1 % and 32 KiB a write: ~2.7 MiB) explain... not yet.
    s.flush(32 * MiB);
    for (let k = 0; k < 30; k++) s.read();
    expect(s.found).toBe(0);
    // Another 2 MiB of someone else's: now beyond the allowance.
    s.foreignWrites(512);
    for (let k = 0; k < 30; k++) s.read();
    expect(s.found).toBeGreaterThan(0);
    expect(s.io.foreignWriteBytes).toBeGreaterThan(1 * MiB);
    expect(s.io.foreignWriteBytes).toBeLessThan(2 * MiB);
    // Counted once: nothing more while nothing more happens.
    const found = s.found;
    for (let k = 0; k < 30; k++) s.read();
    expect(s.found).toBe(found);
  });

  it("counts someone else's writes in 4 KiB units, no more than the device's write requests", () => {
    const s = new Storage();
    s.read();
    s.jobWrites(MiB);
    s.flush(MiB);
    for (let k = 0; k < 30; k++) s.read();
    s.writes += 2;
    s.writeBytes += 2 * MiB; // two large writes of someone else's
    for (let k = 0; k < 30; k++) s.read();
    expect(s.found).toBe(2);
  });

  it("defaults: 1 % and 32 KiB a write for metadata, device counts 50 ms older than the job's, 2 MiB of slack", () => {
    expect(FOREIGN_IO_DEFAULTS).toEqual({
      metaShare: 0.01,
      metaPerWrite: 32 * 1024,
      lagNs: 50 * MS,
      slackBytes: 2 * MiB,
    });
  });
});

describe("ForeignReads: someone else's reads counted while the job runs", () => {
  it("the job's reads not yet handed to the device never count; reads beyond its own do, once", () => {
    const r = new ForeignReads(40);
    expect(r.observe(1000, 10)).toBe(0); // the baseline: whatever came before
    // The job submits 32 reads; the device has seen 20 of them so far (D falls by 12).
    expect(r.observe(1020, 42)).toBe(0);
    // The device catches up: D is back where it was, nothing is anyone else's.
    expect(r.observe(1032, 42)).toBe(0);
    // Two reads of someone else's, seen while the job is 5 reads ahead.
    expect(r.observe(1034 + 27, 42 + 32)).toBe(0);
    expect(r.observe(1034 + 32, 42 + 32)).toBe(2);
    expect(r.count).toBe(2);
    // Counted once: the same level again is nothing new.
    expect(r.observe(1066, 74)).toBe(0);
    expect(r.count).toBe(2);
  });

  it("stops when the job's reads outnumber the device's by more than its queue (holes, a cache), and says why", () => {
    const r = new ForeignReads(40);
    r.observe(0, 0);
    expect(r.observe(100, 120)).toBe(0); // 20 behind: a queue's worth
    expect(r.broken).toBeUndefined();
    r.observe(100, 160); // 60 behind
    expect(r.broken).toMatch(/outnumber the device's by 60/);
    expect(r.observe(1000, 160)).toBe(0); // stopped: nothing more is counted
  });

  it('with siblings, each job may have its queue not yet at the device', () => {
    const two = new ForeignReads(40);
    two.observe(0, 0, 2);
    two.observe(100, 160, 2); // 60 behind: within two queues
    expect(two.broken).toBeUndefined();
    two.observe(100, 190, 2); // 90 behind: more than two
    expect(two.broken).toMatch(/by 90/);
  });

  it('rebase: a reading taken with nothing of the job in flight becomes the level to beat', () => {
    const r = new ForeignReads(40);
    r.observe(0, 0);
    r.observe(90, 120); // 30 behind (say, reads of holes)
    r.rebase();
    expect(r.observe(92, 120)).toBe(2);
    expect(r.count).toBe(2);
  });
});

describe("MetaReads: reads the file system makes for the job's own writes", () => {
  const MiB = 1024 * 1024;
  it('explains one read per 32 MiB written, and keeps at most 4 unused', () => {
    const m = new MetaReads(WRITE_META_BYTES);
    m.moved(0);
    // Nothing written yet: every read is someone else's.
    expect(m.take(1)).toBe(1);
    m.moved(32 * MiB);
    expect(m.take(2)).toBe(1);
    expect(m.take(1)).toBe(1);
    // A GiB written explains 32 reads, but only 4 are kept for later.
    m.moved(32 * MiB + 1024 * MiB);
    expect(m.peek(10)).toBe(6);
    expect(m.take(10)).toBe(6);
    expect(m.take(1)).toBe(1);
    // Counts that go back (none) explain nothing.
    m.moved(0);
    m.moved(32 * MiB);
    expect(m.take(1)).toBe(1);
  });
});
