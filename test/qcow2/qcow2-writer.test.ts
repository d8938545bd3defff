/**
 * Qcow2Writer with small clusters: a few MiB of data need many L2 tables,
 * an L1 table of several clusters, many refcount blocks and a refcount
 * table of several clusters (with 64 KiB clusters that takes images of
 * several GiB). `qemu-img check` finds the image clean, `qemu-img compare`
 * finds it equal to the raw bytes written, and zero clusters stay
 * unallocated.
 */
import { spawnSync } from 'node:child_process';
import { open, writeFile } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2Writer } from '../../lib/io/qcow2-writer.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const reason = hasCommand('qemu-img') ? undefined : 'qemu-img is missing (qemu-utils)';

function qemuImg(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync('qemu-img', args, { encoding: 'utf8' });
}

/** A deterministic shuffle (xorshift). */
function shuffled<T>(xs: T[], seed: number): T[] {
  let s = seed >>> 0 || 1;
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const j = (s >>> 0) % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

describe.skipIf(skipReason('qcow2 writer', reason))('Qcow2Writer', () => {
  const tmp = new TempDir('lowtide-qcow2-writer-');
  afterAll(() => tmp.remove());

  for (const bits of [9, 12]) {
    it(`${2 ** bits}-byte clusters: many L2 tables and refcount blocks, clean and equal`, async () => {
      const cluster = 2 ** bits;
      // A size that is not a multiple of the cluster: the last range is short.
      const size = 40 * MiB + 3 * 512;
      const raw = Buffer.alloc(size);
      // Pieces of 1 to 64 clusters; about half hold data, and a data piece
      // has zero clusters inside it.
      const pieces: { offset: number; length: number }[] = [];
      for (let at = 0, k = 0; at < size; k++) {
        const length = Math.min(size - at, cluster * (1 + ((k * 37) % 64)));
        pieces.push({ offset: at, length });
        if (k % 2 === 0) {
          raw.set(patternBytes(length, k + 1), at);
          if (length >= 3 * cluster) raw.fill(0, at + cluster, at + 2 * cluster);
        }
        at += length;
      }
      const rawFile = tmp.file(`ref-${bits}.raw`);
      await writeFile(rawFile, raw);
      const img = tmp.file(`out-${bits}.qcow2`);
      const fh = await open(img, 'w');
      try {
        const w = new Qcow2Writer(fh, size, bits);
        // In any order, several writes in flight.
        const order = shuffled(pieces, bits);
        for (let i = 0; i < order.length; i += 4) {
          await Promise.all(
            order.slice(i, i + 4).map((p) => w.write(raw.subarray(p.offset, p.offset + p.length), p.length, p.offset)),
          );
        }
        await w.finish();
      } finally {
        await fh.close();
      }
      const c = qemuImg(['check', '--output=json', img]);
      expect(c.status, c.stderr + c.stdout).toBe(0);
      const report = JSON.parse(c.stdout) as { 'check-errors': number; leaks?: number; corruptions?: number };
      expect(report['check-errors']).toBe(0);
      expect(report.leaks ?? 0).toBe(0);
      expect(report.corruptions ?? 0).toBe(0);
      const cmp = qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', rawFile, img]);
      expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      // Exactly the clusters that hold data are allocated.
      let dataClusters = 0;
      for (let at = 0; at < size; at += cluster) {
        if (raw.subarray(at, Math.min(size, at + cluster)).some((b) => b !== 0)) dataClusters++;
      }
      const map = JSON.parse(qemuImg(['map', '--output=json', img]).stdout) as { length: number; data: boolean }[];
      const mapped = map.filter((m) => m.data).reduce((n, m) => n + m.length, 0);
      expect(Math.ceil(mapped / cluster)).toBe(dataClusters);
      const info = JSON.parse(qemuImg(['info', '--output=json', img]).stdout) as { 'cluster-size': number };
      expect(info['cluster-size']).toBe(cluster);
      // With 512-byte clusters the refcount table spans several clusters
      // (header field refcount_table_clusters, bytes 56-59).
      const header = Buffer.alloc(64);
      const h = await open(img, 'r');
      try {
        await h.read(header, 0, 64, 0);
      } finally {
        await h.close();
      }
      if (bits === 9) expect(header.readUInt32BE(56)).toBeGreaterThan(1);
    }, 60_000);
  }

  it('rejects cluster bits outside 9..21', async () => {
    const fh = await open(tmp.file('bad.qcow2'), 'w');
    try {
      expect(() => new Qcow2Writer(fh, MiB, 8)).toThrow(/cluster bits/);
      expect(() => new Qcow2Writer(fh, MiB, 22)).toThrow(/cluster bits/);
    } finally {
      await fh.close();
    }
  });
});
