/**
 * The I/O count of the storage under a source: the physical block devices
 * that serve it, found through sysfs, and their completed I/Os (reads and
 * writes, merged ones included) summed from /sys/block/X/stat.
 *
 * `canary` uses the counts in its quiet checks: with the job's own reads
 * drained, reads on those devices beyond its probes are someone else's, and
 * so are the bytes written beyond what the job reports writing there
 * (canary-foreign-io.ts).
 *
 * From a path to devices:
 * - a block device: itself (st_rdev); a file: the device of its file system
 *   (st_dev);
 * - a partition counts as its whole disk (production on another partition
 *   of the same disk shares its queue);
 * - a device-mapper or md device (LVM, a snapshot, RAID) counts as the
 *   devices under it (`slaves/`, recursively): the I/O of the origin volume
 *   a snapshot shares storage with reaches only those;
 * - a loop device counts as the storage of its backing file, or as itself
 *   when that file has none (a loop device over a file on tmpfs);
 * - a file on btrfs (whose files carry anonymous device numbers, one per
 *   subvolume) counts as the devices of its btrfs file system: the mount
 *   that holds the path (/proc/self/mountinfo) names one of them, and
 *   /sys/fs/btrfs/FSID/devices lists them all.
 * File systems without a block device (tmpfs, network file systems) have
 * none: then there is no count and `canary` runs without quiet checks.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** What StorageIoCounter.read() counts, summed over the devices. */
export interface StorageCounts {
  /** Completed I/Os, reads and writes, merged ones included. */
  ios: number;
  /**
   * Reads the devices were given so far: completed and merged ones, and
   * those in flight (/sys/block/X/inflight). Where the storage is one device
   * right under the source (`exact`), reads beyond the job's own are
   * someone else's, whether or not the job's reads are drained.
   */
  readsSubmitted: number;
  /** The writes alone among them. */
  writes: number;
  /** Bytes written. */
  writeBytes: number;
}

/** Major and minor number of a Linux dev_t as Node reports it. */
export function splitDevT(dev: number): { major: number; minor: number } {
  const lo = dev % 2 ** 32;
  const hi = Math.floor(dev / 2 ** 32);
  const major = ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0);
  const minor = (lo & 0xff) | ((lo >>> 12) & 0xfff00);
  return { major, minor };
}

/**
 * The sysfs directories of the physical devices under `path`, or [] when
 * there are none to find. Never throws: a storage that cannot be resolved
 * has no count.
 */
export function storageDevices(path: string, depth = 0): string[] {
  if (depth > 8) return [];
  try {
    const st = statSync(path);
    const { major, minor } = splitDevT(st.isBlockDevice() ? st.rdev : st.dev);
    if (major === 0) return [...new Set(btrfsDevices(path).flatMap((d) => leaves(d, depth)))];
    const dir = realpathSync(`/sys/dev/block/${major}:${minor}`);
    return [...new Set(leaves(dir, depth))];
  } catch {
    return [];
  }
}

/** A mountinfo field with its octal escapes (\040 for a space) undone. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The sysfs directories of the block devices of the btrfs file system that
 * holds `path`, or [] when it is not on btrfs. The mount with the longest
 * mount point that contains the path (the last one mounted there) gives
 * the file system's type and one of its devices; /sys/fs/btrfs/FSID/devices
 * of the file system that has that device gives all of them.
 */
function btrfsDevices(path: string): string[] {
  return btrfsMount(path)?.devices ?? [];
}

/** The btrfs file system that holds `path` (see btrfsDevices), and whether it compresses what it writes. */
function btrfsMount(path: string): { devices: string[]; compress: boolean } | undefined {
  const real = realpathSync(path);
  let best: { point: string; type: string; source: string; options: string } | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    if (dash < 6 || f.length < dash + 3) continue;
    const point = unescapeMountField(f[4]!);
    const inside = point === '/' || real === point || real.startsWith(`${point}/`);
    if (inside && (best === undefined || point.length >= best.point.length))
      best = { point, type: f[dash + 1]!, source: unescapeMountField(f[dash + 2]!), options: f[dash + 3] ?? '' };
  }
  if (best?.type !== 'btrfs' || !best.source.startsWith('/dev/')) return undefined;
  const st = statSync(best.source);
  if (!st.isBlockDevice()) return undefined;
  const compress = best.options.split(',').some((o) => o.startsWith('compress'));
  const { major, minor } = splitDevT(st.rdev);
  const mounted = realpathSync(`/sys/dev/block/${major}:${minor}`);
  let fsids: string[] = [];
  try {
    fsids = readdirSync('/sys/fs/btrfs').filter((n) => n !== 'features');
  } catch {
    /* no btrfs in sysfs: the mounted device alone */
  }
  for (const fsid of fsids) {
    const dir = join('/sys/fs/btrfs', fsid, 'devices');
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    const devices = names.map((n) => realpathSync(join(dir, n)));
    if (devices.includes(mounted)) return { devices, compress };
  }
  return { devices: [mounted], compress };
}

/**
 * A file on a btrfs file system of one device that does not compress
 * (mount options): its O_DIRECT reads reach that device one for one, with
 * reads of the checksum tree besides (see MetaReads). The whole disk's
 * sysfs directory, or undefined.
 */
function btrfsOneDevice(path: string): string | undefined {
  try {
    const m = btrfsMount(path);
    if (m === undefined || m.compress || m.devices.length !== 1) return undefined;
    const dir = m.devices[0]!;
    return existsSync(join(dir, 'partition')) ? dirname(dir) : dir;
  } catch {
    return undefined;
  }
}

/**
 * Bytes of a job's O_DIRECT reads of a file on btrfs that explain one read
 * of the checksum tree (MetaReads in canary-foreign-io.ts).
 */
export const BTRFS_READ_META_BYTES = 8 * 1024 * 1024;

/** A device's largest read that is never split (see StorageIoCounter.maxUnsplitBytes); 128 KiB when unknown. */
function unsplitBytes(dir: string): number {
  const read = (name: string): number => {
    try {
      return Number(readFileSync(join(dir, 'queue', name), 'utf8').trim());
    } catch {
      return NaN;
    }
  };
  const v = Math.min(read('max_sectors_kb') * 1024, read('max_segments') * 4096);
  if (!Number.isFinite(v) || v < 4096) return 128 * 1024;
  // A power of two: block sizes and alignments are.
  return 2 ** Math.floor(Math.log2(v));
}

/** The sysfs directory of the whole disk `path` is on or is (a partition's parent), or undefined. */
function ownDevice(path: string): string | undefined {
  try {
    const st = statSync(path);
    const { major, minor } = splitDevT(st.isBlockDevice() ? st.rdev : st.dev);
    if (major === 0) return undefined;
    const dir = realpathSync(`/sys/dev/block/${major}:${minor}`);
    return existsSync(join(dir, 'partition')) ? dirname(dir) : dir;
  } catch {
    return undefined;
  }
}

function leaves(dir: string, depth: number): string[] {
  if (depth > 8) return [];
  // A partition: its disk is the parent directory.
  if (existsSync(join(dir, 'partition'))) dir = dirname(dir);
  const backing = join(dir, 'loop', 'backing_file');
  if (existsSync(backing)) {
    const under = storageDevices(readFileSync(backing, 'utf8').trim(), depth + 1);
    return under.length > 0 ? under : [dir];
  }
  let slaves: string[] = [];
  try {
    slaves = readdirSync(join(dir, 'slaves'));
  } catch {
    /* no slaves directory */
  }
  if (slaves.length > 0) return slaves.flatMap((s) => leaves(realpathSync(join(dir, 'slaves', s)), depth + 1));
  return existsSync(join(dir, 'stat')) ? [dir] : [];
}

/**
 * Completed I/Os of a set of devices, read again on every call (one pread
 * per device, ~10-50 us). close() when done.
 */
export class StorageIoCounter {
  readonly devices: string[];
  readonly #fds: number[];
  readonly #buf = Buffer.alloc(512);
  readonly #mem = Buffer.alloc(8192);
  #meminfo: number | undefined;

  /**
   * The storage is one device right under the source (the source is that
   * device, a partition of it, or a file on a file system on it, btrfs of
   * one device that does not compress among them): the device's reads are
   * the job's and others', one for one. Not so through a
   * loop device over a file, device-mapper or md (their reads become other
   * reads below).
   */
  readonly exact: boolean;
  /**
   * The largest read the devices take as one request whatever its memory
   * (max_sectors_kb, and max_segments pages of 4 KiB): a larger one may
   * become several, each counted.
   */
  readonly maxUnsplitBytes: number;
  /**
   * Exact, with reads of the storage's own metadata besides the job's: one
   * per this many bytes the job reads (a file on btrfs, its checksum tree:
   * MetaReads). Undefined: none.
   */
  readonly readMetaBytes: number | undefined;
  readonly #inflight: number[];

  private constructor(
    devices: string[],
    fds: number[],
    inflight: number[],
    exact: boolean,
    maxUnsplitBytes: number,
    readMetaBytes: number | undefined,
  ) {
    this.readMetaBytes = readMetaBytes;
    this.devices = devices;
    this.#fds = fds;
    this.#inflight = inflight;
    this.exact = exact;
    this.maxUnsplitBytes = maxUnsplitBytes;
  }

  /** A counter for the storage under `path`, or undefined when it has none (see the module comment). */
  static open(path: string): StorageIoCounter | undefined {
    const devices = storageDevices(path);
    const fds: number[] = [];
    const inflight: number[] = [];
    try {
      for (const d of devices) {
        fds.push(openSync(join(d, 'stat'), 'r'));
        inflight.push(openSync(join(d, 'inflight'), 'r'));
      }
    } catch {
      for (const fd of [...fds, ...inflight]) closeSync(fd);
      return undefined;
    }
    if (fds.length === 0) return undefined;
    const own = ownDevice(path);
    const btrfs = own === undefined && devices.length === 1 && btrfsOneDevice(path) === devices[0];
    const c = new StorageIoCounter(
      devices.map((d) => basename(d)),
      fds,
      inflight,
      btrfs || (devices.length === 1 && own === devices[0]),
      Math.min(...devices.map(unsplitBytes)),
      btrfs ? BTRFS_READ_META_BYTES : undefined,
    );
    return c.read() === undefined ? (c.close(), undefined) : c;
  }

  /**
   * Completed I/Os (reads and writes, merged ones included), the writes
   * alone, and the bytes written, summed over the devices; undefined if a
   * read fails.
   */
  read(): StorageCounts | undefined {
    let total = 0;
    let writes = 0;
    let writeBytes = 0;
    let readsSubmitted = 0;
    for (let i = 0; i < this.#fds.length; i++) {
      const fd = this.#fds[i]!;
      let n: number;
      let inflightReads: number;
      try {
        // Completed first, then in flight: a read that completes between the
        // two readings is missed for a moment, never counted twice (someone
        // else's reads are the count beyond the job's, so an excess of one
        // would be taken for theirs; the caller reads the job's own count
        // after this).
        n = readSync(fd, this.#mem, 0, this.#buf.length, 0);
        const m = readSync(this.#inflight[i]!, this.#buf, 0, this.#buf.length, 0);
        inflightReads = Number(this.#buf.toString('latin1', 0, m).trim().split(/\s+/)[0]);
      } catch {
        return undefined;
      }
      const f = this.#mem.toString('latin1', 0, n).trim().split(/\s+/);
      // Fields (Documentation/block/stat.rst): 0 reads, 1 reads merged,
      // 4 writes, 5 writes merged, 6 sectors written (of 512 bytes).
      const w = Number(f[4]) + Number(f[5]);
      const v = Number(f[0]) + Number(f[1]) + w;
      const wb = Number(f[6]) * 512;
      const r = Number(f[0]) + Number(f[1]) + inflightReads;
      if (!Number.isSafeInteger(v) || !Number.isSafeInteger(wb) || !Number.isSafeInteger(r)) return undefined;
      total += v;
      writes += w;
      writeBytes += wb;
      readsSubmitted += r;
    }
    return { ios: total, writes, writeBytes, readsSubmitted };
  }

  /**
   * The system's data not yet written to any storage: Dirty + Writeback of
   * /proc/meminfo, bytes (undefined where there is none to read).
   */
  unwrittenBytes(): number | undefined {
    try {
      this.#meminfo ??= openSync('/proc/meminfo', 'r');
      const n = readSync(this.#meminfo, this.#mem, 0, this.#mem.length, 0);
      const text = this.#mem.toString('latin1', 0, n);
      const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
      const v = (kb('Dirty') + kb('Writeback')) * 1024;
      return Number.isSafeInteger(v) ? v : undefined;
    } catch {
      return undefined;
    }
  }

  close(): void {
    for (const fd of [...this.#fds.splice(0), ...this.#inflight.splice(0)]) closeSync(fd);
    if (this.#meminfo !== undefined) closeSync(this.#meminfo);
    this.#meminfo = undefined;
  }
}
