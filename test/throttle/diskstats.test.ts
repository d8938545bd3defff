import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { diskActivity, parseDiskstats } from '../../lib/throttle/index.js';

const SAMPLE = `   8       0 sda 1000 10 80000 2000 500 5 40000 3000 2 4000 5000 0 0 0 0 100 50
   8       1 sda1 900 9 72000 1800 450 4 36000 2700 0 3600 4500
 259       0 nvme0n1 10 0 80 1 0 0 0 0 0 1 1
garbage line
   7       0 loop0 x 0 0 0 0 0 0 0 0 0 0
`;

describe('diskstats', () => {
  it('parses the 11 classic counters and ignores newer fields and bad lines', () => {
    const s = parseDiskstats(SAMPLE);
    expect(s.map((d) => d.name)).toEqual(['sda', 'sda1', 'nvme0n1']);
    expect(s[0]).toEqual({
      major: 8,
      minor: 0,
      name: 'sda',
      readsCompleted: 1000,
      readsMerged: 10,
      sectorsRead: 80000,
      msReading: 2000,
      writesCompleted: 500,
      writesMerged: 5,
      sectorsWritten: 40000,
      msWriting: 3000,
      inFlight: 2,
      msBusy: 4000,
      msWeighted: 5000,
    });
  });

  it('turns two snapshots into rates, await times, utilisation and queue length', () => {
    const [before] = parseDiskstats('8 0 sda 1000 0 8000 2000 100 0 800 500 0 1000 3000');
    const [after] = parseDiskstats('8 0 sda 1500 0 12000 3000 300 0 2400 1500 1 1500 4000');
    const a = diskActivity(before!, after!, 1000);
    expect(a.readsPerSecond).toBe(500);
    expect(a.writesPerSecond).toBe(200);
    expect(a.readBytesPerSecond).toBe(4000 * 512);
    expect(a.writeBytesPerSecond).toBe(1600 * 512);
    expect(a.readAwaitMs).toBe(2); // 1000 ms over 500 reads
    expect(a.writeAwaitMs).toBe(5);
    expect(a.utilization).toBe(0.5);
    expect(a.averageQueue).toBe(1);
    // Counters that ran back and empty intervals give zeros, not NaN or negatives.
    const z = diskActivity(after!, before!, 0);
    for (const v of Object.values(z)) expect(v).toBe(0);
  });

  it('reads the real /proc/diskstats of this machine', () => {
    let text: string;
    try {
      text = readFileSync('/proc/diskstats', 'utf8');
    } catch (err) {
      console.log(`skipped: /proc/diskstats is not readable here (${(err as Error).message})`);
      return;
    }
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    const stats = parseDiskstats(text);
    expect(stats.length).toBe(lines.length);
    for (const s of stats) {
      expect(s.name.length).toBeGreaterThan(0);
      for (const [k, v] of Object.entries(s)) if (k !== 'name') expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
    }
    // Two snapshots of the same device give sane activity.
    const again = parseDiskstats(readFileSync('/proc/diskstats', 'utf8'));
    const first = stats[0]!;
    const second = again.find((s) => s.name === first.name)!;
    const a = diskActivity(first, second, 10);
    expect(a.utilization).toBeGreaterThanOrEqual(0);
    expect(a.utilization).toBeLessThanOrEqual(1);
  });
});
