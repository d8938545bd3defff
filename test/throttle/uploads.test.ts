/**
 * Uploads to a server on this host as the job's own writes: the rule that
 * stops counting them when the device does not write them, and which
 * endpoints are on this host.
 */
import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { isOwnAddress, isThisHost } from '../../lib/repo/storage/s3.js';
import { UPLOAD_WRITE_SHARE, UploadsOnThisHost, VERIFY_BYTES } from '../../lib/throttle/uploads.js';
import type { RemoteWrites } from '../../lib/throttle/types.js';

const MiB = 1024 * 1024;

/** A storage's write counts, moved by hand: requests of `size` bytes started and ended. */
class Counts implements RemoteWrites {
  bytesStarted = 0;
  requestsStarted = 0;
  bytesInFlight = 0;
  onThisHost(): Promise<boolean> {
    return Promise.resolve(true);
  }
  start(bytes: number): void {
    this.bytesStarted += bytes;
    this.requestsStarted++;
    this.bytesInFlight += bytes;
  }
  end(bytes: number): void {
    this.bytesInFlight -= bytes;
  }
}

describe('UploadsOnThisHost', () => {
  it('counts every started request, with its bytes in flight as unwritten, while the device writes them', () => {
    const c = new Counts();
    c.start(5 * MiB); // before the job: not its own
    c.end(5 * MiB);
    const u = new UploadsOnThisHost(c);
    let device = 1000 * MiB;
    expect(u.view(device, 0)).toEqual({ bytes: 0, writes: 0, inFlight: 0 });
    for (let i = 0; i < 20; i++) {
      c.start(16 * MiB);
      const v = u.view(device, 0);
      expect(v.inFlight).toBeCloseTo(UPLOAD_WRITE_SHARE * 16 * MiB);
      expect(v.bytes).toBeCloseTo(UPLOAD_WRITE_SHARE * 16 * MiB * (i + 1));
      expect(v.writes).toBe(i + 1);
      device += 16.2 * MiB;
      c.end(16 * MiB);
    }
    expect(u.view(device, 0).inFlight).toBe(0);
    expect(u.stopped).toBeUndefined();
    expect(u.countedBytes).toBeCloseTo(320 * MiB);
  });

  it('stops at the first span the device wrote less than half of, and keeps what it counted', () => {
    const c = new Counts();
    const u = new UploadsOnThisHost(c);
    const device = 50 * MiB;
    u.view(device, 0);
    // The device writes nothing; only the job's local writes move (they do not count as the server's).
    let local = 0;
    let n = 0;
    while (u.stopped === undefined) {
      c.start(16 * MiB);
      c.end(16 * MiB);
      n++;
      local += 4 * MiB;
      u.view(device + local, local);
      expect(n).toBeLessThanOrEqual(VERIFY_BYTES / (16 * MiB));
    }
    expect(n).toBe(VERIFY_BYTES / (16 * MiB));
    expect(u.stopped).toMatch(/wrote 0\.0 MiB while the server on this host acknowledged 64\.0 MiB/);
    const frozen = u.view(device + local, local);
    c.start(16 * MiB);
    expect(u.view(device + local, local)).toEqual(frozen);
    expect(frozen.inFlight).toBe(0);
    expect(u.countedBytes).toBeCloseTo(n * 16 * MiB);
  });

  it('half written is enough; someone else’s writes beside them count as written', () => {
    const c = new Counts();
    const u = new UploadsOnThisHost(c);
    let device = 0;
    u.view(device, 0);
    for (let i = 0; i < 40; i++) {
      c.start(8 * MiB);
      c.end(8 * MiB);
      device += 4 * MiB;
      u.view(device, 0);
    }
    expect(u.stopped).toBeUndefined();
  });
});

describe('isThisHost', () => {
  it('loopback addresses and names, and this host’s own addresses, are this host', async () => {
    expect(isOwnAddress('127.0.0.1')).toBe(true);
    expect(isOwnAddress('127.8.9.10')).toBe(true);
    expect(isOwnAddress('::1')).toBe(true);
    expect(isOwnAddress('::ffff:127.0.0.1')).toBe(true);
    expect(await isThisHost('127.0.0.1')).toBe(true);
    expect(await isThisHost('[::1]')).toBe(true);
    expect(await isThisHost('localhost')).toBe(true);
    const own = Object.values(networkInterfaces())
      .flat()
      .find((i) => i !== undefined && !i.internal);
    if (own) expect(await isThisHost(own.address)).toBe(true);
  });

  it('other addresses, and names that do not resolve, are not', async () => {
    // TEST-NET-1 and the IPv6 documentation prefix: never a host's own.
    expect(isOwnAddress('192.0.2.1')).toBe(false);
    expect(await isThisHost('192.0.2.1')).toBe(false);
    expect(await isThisHost('[2001:db8::1]')).toBe(false);
    expect(await isThisHost('no-such-host.invalid')).toBe(false);
  });
});
