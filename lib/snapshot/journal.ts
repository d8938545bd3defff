/**
 * The journal of a VM backup run: one file per run in a state directory,
 * `<run id>.journal`, JSON lines. Each step is appended and fsync'd before
 * the step is taken, so after a crash the journal names everything the run
 * may have made (an overlay, a frozen guest, a storage snapshot) and
 * recovery can finish or undo it. The running process holds an flock on its
 * journal; recovery skips journals that are locked (their run is alive).
 * A run that cleaned up removes its journal.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readdir, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';
import type { StorageSnapshotHandle } from './storage/types.js';

export const JOURNAL_SUFFIX = '.journal';
export const JOURNAL_VERSION = 1;

/** One disk of the run as the journal's first record names it. */
export interface JournalDisk {
  name: string;
  /** The node the VM snapshot is taken of (the disk's top node before the snapshot). */
  nodeName: string;
  /** The disk's image file (real path). */
  file: string;
  /** The overlay QEMU creates and its node name. */
  overlayFile: string;
  overlayNode: string;
  /** The block job that commits the overlay. */
  jobId: string;
  /** The dirty bitmap generation the run adds (qcow2 disks; lib/snapshot/cbt.ts). */
  bitmap?: string | null | undefined;
  /** The generation the run disables in the snapshot transaction. */
  previousBitmap?: string | null | undefined;
}

export interface JournalBegin {
  step: 'begin';
  version: number;
  runId: string;
  qmp: string;
  qga?: string | undefined;
  repository: string;
  disks: JournalDisk[];
  storage: StorageSnapshotHandle;
  /** Directory of the overlays (removed when empty). */
  overlayDir: string;
}

export type JournalStep =
  | JournalBegin
  | { step: 'freeze' }
  | { step: 'thawed' }
  | { step: 'vm-snapshot' }
  | { step: 'storage-snapshot' }
  | { step: 'commit'; disk: string }
  | { step: 'committed'; disk: string }
  | { step: 'backup'; disk: string }
  | { step: 'backed-up'; disk: string; id: string }
  | { step: 'storage-deleted' }
  | { step: 'recorded' }
  | { step: 'done' };

export type JournalRecord = JournalStep & { at: string };

export function newRunId(): string {
  const t = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${t}-${randomBytes(4).toString('hex')}`;
}

const RUN_ID_PATTERN = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/;

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The open journal of a running backup (its writer holds the flock). */
export class Journal {
  readonly path: string;
  readonly #dir: string;
  #fh: FileHandle | undefined;

  private constructor(dir: string, path: string, fh: FileHandle) {
    this.#dir = dir;
    this.path = path;
    this.#fh = fh;
  }

  /** Creates the journal of run `begin.runId` in `dir` and records `begin`. */
  static async create(dir: string, begin: Omit<JournalBegin, 'step' | 'version'>): Promise<Journal> {
    if (!RUN_ID_PATTERN.test(begin.runId)) throw new LowtideError('INTERNAL', `bad run id ${begin.runId}`);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const path = join(dir, `${begin.runId}${JOURNAL_SUFFIX}`);
      const fh = await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_APPEND, 0o600);
      if (!native.tryLockExclusive(fh.fd)) {
        await fh.close();
        throw new LowtideError('BUSY', `journal ${path} is locked by another process`);
      }
      const j = new Journal(dir, path, fh);
      await j.record({ step: 'begin', version: JOURNAL_VERSION, ...begin });
      await syncDir(dir);
      return j;
    } catch (err) {
      throw toLowtideError(err, 'WRITE_FAILED', `creating the journal in ${dir}`);
    }
  }

  /** Appends one step and makes it durable. */
  async record(step: JournalStep): Promise<void> {
    if (!this.#fh) throw new LowtideError('CLOSED', `journal ${this.path} is closed`);
    try {
      await this.#fh.write(`${JSON.stringify({ ...step, at: new Date().toISOString() })}\n`);
      await this.#fh.datasync();
    } catch (err) {
      throw toLowtideError(err, 'WRITE_FAILED', `writing the journal ${this.path}`);
    }
  }

  /** The run is finished and nothing is left: removes the journal. */
  async remove(): Promise<void> {
    await unlink(this.path).catch(() => undefined);
    await syncDir(this.#dir).catch(() => undefined);
    await this.close();
  }

  /** Closes the journal (and so releases its lock), leaving the file for recovery. */
  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close().catch(() => undefined);
  }
}

/** A journal left by a run that is not alive: its records, and a handle that holds its lock. */
export interface LeftJournal {
  path: string;
  begin: JournalBegin;
  records: JournalRecord[];
  /** Appends a step (recovery records what it finished). */
  record(step: JournalStep): Promise<void>;
  /** Recovery finished: removes the file. */
  remove(): Promise<void>;
  /** Releases the lock, leaving the file. */
  close(): Promise<void>;
}

/** The journals in `dir` whose runs are not alive, oldest first, each locked for the caller. */
export async function leftJournals(dir: string): Promise<{ journals: LeftJournal[]; damaged: string[] }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { journals: [], damaged: [] };
    throw toLowtideError(err, 'IO_ERROR', `reading the state directory ${dir}`);
  }
  const journals: LeftJournal[] = [];
  const damaged: string[] = [];
  for (const name of names.filter((n) => n.endsWith(JOURNAL_SUFFIX)).sort()) {
    if (!RUN_ID_PATTERN.test(name.slice(0, -JOURNAL_SUFFIX.length))) continue;
    const path = join(dir, name);
    let fh: FileHandle;
    try {
      fh = await open(path, fsc.O_WRONLY | fsc.O_APPEND);
    } catch {
      continue; // removed meanwhile
    }
    if (!native.tryLockExclusive(fh.fd)) {
      await fh.close();
      continue; // its run is alive
    }
    const records: JournalRecord[] = [];
    const text = await readFile(path, 'utf8');
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        records.push(JSON.parse(line) as JournalRecord);
      } catch {
        break; // a torn last line: the step it announced was not taken
      }
    }
    const begin = records[0];
    if (begin?.step !== 'begin' || begin.version !== JOURNAL_VERSION) {
      damaged.push(path);
      await fh.close();
      continue;
    }
    let open_ = true;
    const close = async (): Promise<void> => {
      if (!open_) return;
      open_ = false;
      await fh.close().catch(() => undefined);
    };
    journals.push({
      path,
      begin,
      records,
      async record(step) {
        await fh.write(`${JSON.stringify({ ...step, at: new Date().toISOString() })}\n`);
        await fh.datasync();
        records.push({ ...step, at: new Date().toISOString() } as JournalRecord);
      },
      async remove() {
        await unlink(path).catch(() => undefined);
        await syncDir(dir).catch(() => undefined);
        await close();
      },
      close,
    });
  }
  return { journals, damaged };
}
