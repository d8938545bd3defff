/**
 * The registry of `canary` jobs on one storage (lib/throttle/job-registry.ts):
 * files in a directory, mapped shared, that jobs of this process and of
 * others read. Each case uses a directory of its own.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSource } from '../../lib/index.js';
import { JobRegistry, READS_SLOT } from '../../lib/throttle/job-registry.js';

const root = join(import.meta.dirname, '../..');
const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const dirs: string[] = [];
const jobs: JobRegistry[] = [];

function newDir(): string {
  const d = mkdtempSync(join(base, 'lowtide-registry-test-'));
  dirs.push(d);
  return join(d, 'jobs');
}

function join1(devices: string[], dir: string, exact = true): JobRegistry {
  const j = JobRegistry.join(devices, exact, dir);
  expect(j).toBeDefined();
  jobs.push(j!);
  return j!;
}

afterEach(() => {
  for (const j of jobs.splice(0)) j.leave();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('JobRegistry', () => {
  it('jobs on the same devices see one another’s probes and writes; others do not', () => {
    const dir = newDir();
    const a = join1(['vdx'], dir);
    const b = join1(['vdx'], dir);
    const c = join1(['vdy'], dir);
    a.addProbe();
    a.addWrite(4096);
    a.addWrite(8192);
    a.setUploads(1000, 2, 300);
    const s = b.siblings();
    expect(s).toEqual({
      reads: 1,
      running: 1,
      writeBytes: 12288,
      writes: 2,
      uploadBytes: 1000,
      uploadWrites: 2,
      uploadInFlight: 300,
    });
    // A's siblings are B only; C has none.
    expect(a.siblings().running).toBe(1);
    expect(c.siblings()).toMatchObject({ reads: 0, running: 0, writeBytes: 0 });
  });

  it('a reader counts every read it hands to the kernel into the job’s file', async () => {
    const dir = newDir();
    const file = join(dirs.at(-1)!, 'source.bin');
    writeFileSync(file, Buffer.alloc(8 << 20, 7));
    const a = join1(['vdx'], dir);
    const b = join1(['vdx'], dir);
    const src = await openSource(file);
    try {
      const r = src.read([{ offset: 0, length: 8 << 20 }], { blockSize: 65536, queueDepth: 4 });
      let n = 0;
      // Shared after the first block: the reads before it count too.
      for await (const _ of r) {
        if (n++ === 0) r.shareReads(a.map, READS_SLOT);
      }
      expect(n).toBe(128);
      expect(r.submittedReads()).toBe(128);
      a.addProbe();
      expect(b.siblings().reads).toBe(129);
    } finally {
      await src.close();
    }
  });

  it('a job that ends leaves its counts with the jobs that saw it; its file goes', () => {
    const dir = newDir();
    const a = join1(['vdx'], dir);
    const b = join1(['vdx'], dir);
    a.addWrite(4096);
    expect(b.siblings().running).toBe(1);
    a.addWrite(4096);
    a.leave();
    expect(readdirSync(dir).filter((n) => n.endsWith('.job'))).toHaveLength(1);
    // The writes made after B's last look are there too (B kept the mapping).
    expect(b.siblings()).toMatchObject({ running: 0, writeBytes: 8192, writes: 2 });
    // A job that joins now never sees A, only B.
    expect(join1(['vdx'], dir).siblings()).toMatchObject({ running: 1, writeBytes: 0 });
  });

  it('reads are not counted once a sibling’s do not reach the device one for one', () => {
    const dir = newDir();
    const a = join1(['vdx'], dir);
    const b = join1(['vdx'], dir);
    a.addProbe();
    expect(b.siblings().reads).toBe(1);
    a.inexact();
    expect(b.siblings().reads).toBeUndefined();
    const c = join1(['vdx'], dir, false);
    expect(c.siblings().reads).toBeUndefined();
  });

  it('another process’s job counts; its file is removed once the process is gone', () => {
    const dir = newDir();
    const b = join1(['vdx'], dir);
    const child = `
      const { JobRegistry } = await import(${JSON.stringify(join(root, 'dist/throttle/job-registry.js'))});
      const j = JobRegistry.join(['vdx'], true, ${JSON.stringify(dir)});
      j.addWrite(65536); j.addProbe(); j.addProbe();
      // Ends without leave(): as a process that was killed.
      process.stdout.write(String(process.pid));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(dir).some((n) => n.includes(`-${r.stdout}-`))).toBe(true);
    expect(b.siblings()).toMatchObject({ reads: 2, running: 1, writeBytes: 65536, writes: 1 });
    // The next job to join removes the dead process's file; B keeps its counts.
    join1(['vdx'], dir);
    expect(readdirSync(dir).some((n) => n.includes(`-${r.stdout}-`))).toBe(false);
    expect(b.siblings()).toMatchObject({ reads: 2, running: 1, writeBytes: 65536, writes: 1 });
  });

  it('without a usable directory a job has no registry', () => {
    const d = newDir();
    writeFileSync(d, 'not a directory');
    expect(JobRegistry.join(['vdx'], true, d)).toBeUndefined();
  });
});
