/**
 * The pack writer of remote repositories (lib/repo/storage/packs.ts) over an
 * object store held in memory whose writes end when the test lets them: every
 * pack holds exactly the records placed in it at the locations place() gave,
 * while buffers are reused and grown, uploads overlap and one fails.
 */
import { describe, expect, it } from 'vitest';
import { PACKS_IN_FLIGHT, PackWriter, type PackLocation } from '../../lib/repo/storage/packs.js';
import type { ObjectStorage, StoredObject } from '../../lib/repo/storage/types.js';
import { patternBytes } from '../helpers/tmp.js';

/** Objects in memory; each write keeps a copy of its bytes as they are when it ends, and ends when released. */
class HeldStorage implements ObjectStorage {
  readonly location = 'memory://test';
  readonly objects = new Map<string, Buffer>();
  readonly #pending: { key: string; data: Buffer; end: (ok: boolean) => void }[] = [];
  failNext = false;

  get pending(): number {
    return this.#pending.length;
  }
  check(): Promise<void> {
    return Promise.resolve();
  }
  putIfAbsent(key: string, data: Buffer): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const fail = this.failNext;
      this.failNext = false;
      this.#pending.push({
        key,
        data,
        end: () => {
          if (fail) return reject(new Error(`writing ${key} failed`));
          if (this.objects.has(key)) return resolve(false);
          this.objects.set(key, Buffer.from(data));
          resolve(true);
        },
      });
    });
  }
  /** Ends the oldest pending write (after the bytes it was given may have been changed by then). */
  async release(): Promise<void> {
    this.#pending.shift()!.end(true);
    await new Promise((r) => setImmediate(r));
  }
  put(): Promise<void> {
    throw new Error('not used');
  }
  get(): Promise<Buffer | undefined> {
    throw new Error('not used');
  }
  head(): Promise<StoredObject | undefined> {
    throw new Error('not used');
  }
  // eslint-disable-next-line require-yield
  async *list(): AsyncGenerator<StoredObject> {
    throw new Error('not used');
  }
  delete(): Promise<void> {
    throw new Error('not used');
  }
  close(): void {}
}

const KiB = 1024;

describe('PackWriter', () => {
  it('packs hold their records at the locations given, across reused and grown buffers', async () => {
    const storage = new HeldStorage();
    const uploaded: { id: string; loc: PackLocation }[] = [];
    const w = new PackWriter(
      storage,
      64 * KiB,
      (ids, locs) => ids.forEach((id, i) => uploaded.push({ id, loc: locs[i]! })),
      16 * KiB,
    );
    const records = new Map<string, Buffer>();
    const placed = new Map<string, PackLocation>();
    for (let i = 0; i < 60; i++) {
      // Mostly small records, now and then one larger than the bound (the buffer grows).
      const size = i % 17 === 16 ? 40 * KiB : 1 + ((i * 7919) % (16 * KiB));
      const id = `c${i}`;
      const data = patternBytes(size, 100 + i);
      records.set(id, data);
      placed.set(id, w.place(id, data));
      // The writer keeps at most PACKS_IN_FLIGHT uploads: end the oldest while it waits.
      while (storage.pending >= PACKS_IN_FLIGHT) await storage.release();
      await w.room();
    }
    const flushed = w.flush();
    while (storage.pending > 0) await storage.release();
    await flushed;
    expect(uploaded.map((u) => u.id).sort()).toEqual([...records.keys()].sort());
    for (const { id, loc } of uploaded) {
      expect(loc).toEqual(placed.get(id));
      const pack = storage.objects.get(`packs/${loc.pack}`)!;
      expect(pack.subarray(loc.offset, loc.offset + loc.length).equals(records.get(id)!)).toBe(true);
    }
    // Each pack: its records back to back, and it closed at the first record that reached the pack size.
    for (const [key, pack] of storage.objects) {
      const mine = uploaded.filter((u) => `packs/${u.loc.pack}` === key).sort((a, b) => a.loc.offset - b.loc.offset);
      let at = 0;
      for (const u of mine) {
        expect(u.loc.offset).toBe(at);
        at += u.loc.length;
      }
      expect(pack.length).toBe(at);
      expect(at - mine[mine.length - 1]!.loc.length).toBeLessThan(64 * KiB);
    }
    expect(storage.objects.size).toBeGreaterThan(4);
  });

  it('a failed upload is thrown by every later call', async () => {
    const storage = new HeldStorage();
    const w = new PackWriter(storage, 4 * KiB, () => undefined, 4 * KiB);
    storage.failNext = true;
    w.place('a', patternBytes(5 * KiB, 1));
    expect(storage.pending).toBe(1);
    storage.release().catch(() => undefined);
    await expect(w.flush()).rejects.toThrow(/writing packs\/[0-9a-f]{32} failed/);
    expect(() => w.place('b', patternBytes(10, 2))).toThrow(/failed/);
  });
});
