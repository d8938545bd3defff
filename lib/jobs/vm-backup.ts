/**
 * Backing up a running QEMU VM from a storage snapshot, and recovering what
 * a crashed run left.
 *
 * The flow, for all of the VM's disks at once: one QMP `transaction` of
 * `blockdev-snapshot-sync` (the base files are frozen, new writes go to
 * overlays) → a storage snapshot of the frozen base files → `block-commit`
 * of each overlay (the VM is back on its own files, usually within a
 * second) and the overlay files removed → each disk backed up from the
 * storage snapshot with backup() → the storage snapshot deleted. A journal
 * records each step before it is taken (lib/snapshot/journal.ts); every run
 * first recovers the journals that earlier runs left.
 */
import { mkdir, open, readdir, rmdir, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { choiceOption, functionOption, integerOption, objectOption, signalOption, stringOption } from '../options.js';
import { passwordOption } from '../repo/crypto.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { Journal, leftJournals, newRunId, type JournalDisk, type LeftJournal } from '../snapshot/journal.js';
import {
  commitOverlay,
  listVmDisks,
  takeVmSnapshot,
  vmIdentity,
  type VmDisk,
  type VmIdentity,
} from '../snapshot/qemu.js';
import {
  planDiskCbt,
  removeBitmaps,
  rotationActions,
  undoRotation,
  type CbtBase,
  type DiskCbtPlan,
} from '../snapshot/cbt.js';
import { GuestAgentClient } from '../snapshot/qga.js';
import { startThawWatchdog, type ThawWatchdog } from '../snapshot/thaw-watchdog.js';
import { QmpClient } from '../snapshot/qmp.js';
import {
  storageProvider,
  STORAGE_KINDS,
  type StorageKind,
  type StorageSnapshotHandle,
} from '../snapshot/storage/index.js';
import type { ThrottleSettings } from '../throttle/job-settings.js';
import { openSource } from '../io/source.js';
import { backup, type BackupProgress } from './backup.js';
import type { DeviceReadReport, ReadFrom } from './device-read.js';

export interface VmBackupOptions extends ThrottleSettings {
  /** The VM's QMP socket (unix). */
  qmp: string;
  /** Repository path. */
  repository: string;
  /** The passphrase of an encrypted repository (default: LOWTIDE_PASSWORD from the environment). */
  password?: string | undefined;
  /**
   * The guest agent's socket (qemu-ga's virtio-serial channel on the host):
   * the guest's file systems are frozen (guest-fsfreeze-freeze) around the
   * VM snapshot, for at most maxFrozenMs.
   */
  qga?: string | undefined;
  /** Longest time the guest may stay frozen; a timer thaws it then (default 5000). */
  maxFrozenMs?: number | undefined;
  /** Timeout of each guest agent command (default 5000). */
  qgaTimeoutMs?: number | undefined;
  /** Storage snapshot provider (default 'reflink'). */
  storage?: StorageKind | undefined;
  /** Directory of the run journals and overlays (default: `<repository>.vm-state` beside the repository). */
  stateDir?: string | undefined;
  /** Files and directories to leave out of FAT volumes inside the disks (as backup()). */
  exclude?: readonly string[] | undefined;
  /**
   * 'file' (default): read each disk's copy through the file system; 'device':
   * read raw disks' blocks from the device under the storage snapshot through
   * the offset table (as backup()), where the file system allows it.
   */
  readFrom?: ReadFrom | undefined;
  /** Timeout of each QMP command (default 30000). */
  qmpTimeoutMs?: number | undefined;
  /** Most time an overlay commit may take (default 600000). */
  commitTimeoutMs?: number | undefined;
  /** Aborts the backups; the overlays are still committed and the storage snapshot deleted. */
  signal?: AbortSignal | undefined;
  onProgress?: ((p: VmBackupProgress) => void) | undefined;
  /** Interval of the disk backups' progress reports (as backup()). */
  progressIntervalMs?: number | undefined;
}

export type VmBackupPhase =
  'recover' | 'freeze' | 'vm-snapshot' | 'thaw' | 'storage-snapshot' | 'commit' | 'backup' | 'storage-delete' | 'done';

export interface VmBackupProgress {
  phase: VmBackupPhase;
  /** The disk a 'commit' or 'backup' phase is at. */
  disk?: string | undefined;
  /** The disk backup's own progress (phase 'backup'). */
  backup?: BackupProgress | undefined;
}

export interface VmDiskBackup {
  name: string;
  qdev: string;
  nodeName: string;
  format: string;
  file: string;
  virtualSize: number;
  /** The path the backup read (the disk's copy in the storage snapshot). */
  snapshotPath: string;
  /** The backup id in the repository. */
  id: string;
  /** Changed-block tracking of the disk in this run. */
  cbt: VmDiskCbt;
  /** Bytes the backup read from the disk's copy. */
  bytesRead: number;
  /** With readFrom 'device': where the bytes came from; a string says why the disk was read through the file. */
  readFrom?: DeviceReadReport | string | undefined;
}

/** A disk's changed-block tracking in one run (lib/snapshot/cbt.ts). */
export interface VmDiskCbt {
  /** 'incremental': only what the frozen bitmap generation marks was read. */
  mode: 'incremental' | 'full';
  /** Why the backup is full (null for an incremental). */
  reason: string | null;
  /** The dirty bitmap generation this run added (the next backup's changes), or null (raw disk). */
  bitmap: string | null;
  /** The generation read for the incremental, or null. */
  changedBitmap: string | null;
  /** The incremental's parent backup, or null. */
  parent: string | null;
}

/** The VM record written beside the backups: `vms/<run id>.json` (docs/repository-format.md). */
export interface VmBackupRecord {
  kind: 'lowtide-vm-backup';
  version: 1;
  runId: string;
  vm: VmIdentity;
  qmp: string;
  /**
   * 'application-consistent': the guest's file systems were frozen through
   * the whole snapshot transaction; 'crash-consistent': no guest agent was
   * used, or the freeze did not cover the transaction (guestAgent says why).
   */
  consistency: 'application-consistent' | 'crash-consistent';
  /** From the snapshot transaction's start to the last overlay committed. */
  vmSnapshotSeconds: number;
  /** From the freeze command to the thaw's answer; null without a guest agent. */
  guestFrozenSeconds: number | null;
  /** The guest agent used, or null. */
  guestAgent: {
    path: string;
    /** File systems the agent froze. */
    frozenFileSystems: number;
    /** The maxFrozenMs timer thawed the guest (before the run would have). */
    thawedByTimer: boolean;
    maxFrozenMs: number;
  } | null;
  storage: { kind: StorageKind; description: string; createSeconds: number; locations: string[] };
  disks: VmDiskBackup[];
  started: string;
  finished: string;
}

export interface VmBackupResult {
  runId: string;
  record: VmBackupRecord;
  /** The VM record's path in the repository. */
  recordPath: string;
  /** Runs an earlier crash left, recovered before this one. */
  recovered: VmRecoveryReport['recovered'];
}

interface ResolvedVmBackupOptions {
  qmp: string;
  qga: string | undefined;
  maxFrozenMs: number;
  qgaTimeoutMs: number;
  repository: string;
  password: string | undefined;
  storage: StorageKind;
  stateDir: string;
  exclude: readonly string[];
  readFrom: ReadFrom;
  qmpTimeoutMs: number;
  commitTimeoutMs: number;
  signal: AbortSignal | undefined;
  onProgress: ((p: VmBackupProgress) => void) | undefined;
  progressIntervalMs: number | undefined;
  throttle: ThrottleSettings;
}

/** The state directory beside a repository: `<parent>/<name>.vm-state`. */
export function defaultStateDir(repository: string): string {
  const r = resolve(repository);
  return join(dirname(r), `${basename(r)}.vm-state`);
}

function resolveOptions(options: unknown): ResolvedVmBackupOptions {
  const o = objectOption('options', options);
  const qmp = stringOption('qmp', o.qmp);
  const repository = stringOption('repository', o.repository);
  const storage = choiceOption('storage', o.storage, STORAGE_KINDS, 'reflink');
  const stateDir =
    o.stateDir === undefined ? defaultStateDir(repository) : resolve(stringOption('stateDir', o.stateDir));
  let exclude: readonly string[] = [];
  if (o.exclude !== undefined) {
    if (!Array.isArray(o.exclude) || o.exclude.some((x) => typeof x !== 'string'))
      throw new LowtideError('INVALID_ARGUMENT', `exclude: expected an array of strings`);
    exclude = o.exclude as string[];
  }
  const {
    qmp: _q,
    qga: _a,
    maxFrozenMs: _m,
    qgaTimeoutMs: _at,
    repository: _r,
    password: _pw,
    storage: _s,
    stateDir: _d,
    exclude: _e,
    readFrom: _f,
    qmpTimeoutMs: _t,
    commitTimeoutMs: _c,
    signal: _g,
    onProgress: _p,
    progressIntervalMs: _i,
    ...throttle
  } = o;
  return {
    qmp: resolve(qmp),
    qga: o.qga === undefined ? undefined : resolve(stringOption('qga', o.qga)),
    maxFrozenMs: integerOption('maxFrozenMs', o.maxFrozenMs, 5000, 100, 60_000),
    qgaTimeoutMs: integerOption('qgaTimeoutMs', o.qgaTimeoutMs, 5000, 1, 60_000),
    repository: resolve(repository),
    password: passwordOption(o.password),
    storage,
    stateDir,
    exclude,
    readFrom: choiceOption<ReadFrom>('readFrom', o.readFrom, ['device', 'file'], 'file'),
    qmpTimeoutMs: integerOption('qmpTimeoutMs', o.qmpTimeoutMs, 30_000, 1, 3_600_000),
    commitTimeoutMs: integerOption('commitTimeoutMs', o.commitTimeoutMs, 600_000, 1, 86_400_000),
    signal: signalOption('signal', o.signal),
    onProgress: functionOption<(p: VmBackupProgress) => void>('onProgress', o.onProgress),
    progressIntervalMs: o.progressIntervalMs as number | undefined,
    throttle: throttle as ThrottleSettings,
  };
}

/** A disk name as a file name: letters, digits, '.', '_' and '-'. */
function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** Disks lowtide can back up: raw and qcow2 files on their own (no backing chain). */
function checkDisks(disks: readonly VmDisk[], qmp: string): void {
  if (disks.length === 0) throw new LowtideError('UNSUPPORTED', `the VM at ${qmp} has no disks`);
  for (const d of disks) {
    if (d.format !== 'raw' && d.format !== 'qcow2')
      throw new LowtideError('UNSUPPORTED', `disk ${d.name} (${d.realPath}): format ${d.format} is not supported`, {
        path: d.realPath,
      });
    if (d.backingDepth > 0)
      throw new LowtideError(
        'UNSUPPORTED',
        `disk ${d.name} runs on a backing chain (${d.backingDepth} backing files below ${d.file}): ` +
          'a VM snapshot is held already; delete it first (or run lowtide vm recover)',
        { path: d.realPath },
      );
    if (!d.realPath.startsWith('/'))
      throw new LowtideError('UNSUPPORTED', `disk ${d.name}: ${d.file} is not a file on this host`);
  }
}

/**
 * The bitmap generations the repository's VM records name for the disk
 * file `file`: the backup taken at each, and the generation of the latest.
 * A generation counts only while its backup is still in the repository.
 */
async function cbtBases(
  repo: Repository,
  file: string,
): Promise<{ bases: Map<string, CbtBase>; last: string | undefined }> {
  const found: { finished: string; base: CbtBase }[] = [];
  for (const runId of await repo.vmRecordIds()) {
    let rec: Partial<VmBackupRecord>;
    try {
      rec = ((await repo.readVmRecord(runId)) ?? {}) as Partial<VmBackupRecord>;
    } catch {
      continue; // not a record lowtide can read: it names no generation
    }
    if (rec.kind !== 'lowtide-vm-backup' || !Array.isArray(rec.disks)) continue;
    for (const d of rec.disks) {
      if (d.file !== file || typeof d.cbt?.bitmap !== 'string') continue;
      found.push({
        finished: String(rec.finished),
        base: { bitmap: d.cbt.bitmap, backupId: d.id, virtualSize: d.virtualSize },
      });
    }
  }
  found.sort((a, b) => (a.finished < b.finished ? -1 : a.finished > b.finished ? 1 : 0));
  const bases = new Map<string, CbtBase>();
  for (const f of found) {
    try {
      await repo.readManifest(f.base.backupId);
      bases.set(f.base.bitmap, f.base);
    } catch {
      // The backup was pruned: an incremental cannot build on it.
    }
  }
  return { bases, last: found.at(-1)?.base.bitmap };
}

/**
 * The disk's changed-block tracking as the storage snapshot allows it: the
 * frozen generation must be in the copy, and not flagged in use; else the
 * backup is full, with the reason.
 */
async function frozenGeneration(path: string, p: DiskCbtPlan): Promise<VmDiskCbt> {
  const full = (reason: string | null): VmDiskCbt => ({
    mode: 'full',
    reason,
    bitmap: p.bitmap,
    changedBitmap: null,
    parent: null,
  });
  if (p.previousBitmap === null || p.parent === null) return full(p.fullReason);
  const source = await openSource(path, { format: 'qcow2' });
  try {
    const b = source.virtualDisk?.bitmaps.find((x) => x.name === p.previousBitmap);
    if (b === undefined) return full(`the storage snapshot's image has no dirty bitmap ${p.previousBitmap}`);
    if (b.inUse) return full(`the dirty bitmap ${p.previousBitmap} is flagged in use in the storage snapshot's image`);
  } finally {
    await source.close();
  }
  return { mode: 'incremental', reason: null, bitmap: p.bitmap, changedBitmap: p.previousBitmap, parent: p.parent };
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toLowtideError(err, 'IO_ERROR', `removing ${path}`);
  }
}

async function removeDirIfEmpty(dir: string): Promise<void> {
  try {
    if ((await readdir(dir)).length === 0) await rmdir(dir);
  } catch {
    // Gone already, or not empty: nothing to do.
  }
}

/**
 * Backs up every disk of the running VM behind `qmp` from a storage
 * snapshot; one backup id per disk. The VM runs on overlays only between
 * the snapshot transaction and the commits (no backup reading in between).
 */
export async function backupVm(options: VmBackupOptions): Promise<VmBackupResult> {
  const o = resolveOptions(options);
  const progress = (p: VmBackupProgress): void => o.onProgress?.(p);
  o.signal?.throwIfAborted();

  progress({ phase: 'recover' });
  const before = await recoverVm({ stateDir: o.stateDir, qmpTimeoutMs: o.qmpTimeoutMs, signal: undefined });
  const blocking = before.failed.find((f) => f.qmp === o.qmp);
  if (blocking)
    throw new LowtideError(
      blocking.error.code,
      `an earlier run against ${o.qmp} could not be recovered (${blocking.journal}): ${blocking.error.message}`,
      { cause: blocking.error },
    );

  // Fail early, before anything is taken: the repository opens, the disks are
  // supported. The backups and the record use it as opened (one passphrase check).
  const repo = await openRepository(o.repository, { password: o.password });
  const started = new Date();
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(o.qmp, { timeoutMs: o.qmpTimeoutMs, commandTimeoutMs: o.qmpTimeoutMs });
  } catch (err) {
    repo.close();
    throw err;
  }
  let agent: GuestAgentClient | undefined;
  try {
    const vm = await vmIdentity(qmp);
    const disks = await listVmDisks(qmp);
    checkDisks(disks, o.qmp);
    const provider = storageProvider(o.storage);
    const files = disks.map((d) => d.realPath);
    await provider.check(files);
    o.signal?.throwIfAborted();

    // A guest agent that does not answer stops the run here, before anything is taken.
    agent = o.qga === undefined ? undefined : await GuestAgentClient.connect(o.qga, { timeoutMs: o.qgaTimeoutMs });
    if (agent && (await agent.execute('guest-fsfreeze-status', {}, { timeoutMs: o.qgaTimeoutMs })) !== 'thawed')
      throw new LowtideError('BUSY', `the guest's file systems are frozen already (${o.qga}); thaw them first`);

    const runId = newRunId();
    const tag = runId.slice(-8);
    const overlayDir = join(o.stateDir, `${runId}.overlays`);
    // Changed-block tracking: which generation each disk's backup builds on. Bitmaps of
    // earlier runs that no backup can use go now, before anything is taken.
    const cbt: DiskCbtPlan[] = [];
    for (const d of disks) {
      const { bases, last } = await cbtBases(repo, d.realPath);
      const p = planDiskCbt(d, runId, (name) => bases.get(name), last);
      await removeBitmaps(qmp, d.nodeName, p.stale);
      cbt.push(p);
    }
    const plan: JournalDisk[] = disks.map((d, i) => ({
      name: d.name,
      nodeName: d.nodeName,
      file: d.realPath,
      overlayFile: join(overlayDir, `${safeName(d.name)}.qcow2`),
      overlayNode: `lt-ov-${tag}-${i}`,
      jobId: `lt-commit-${tag}-${i}`,
      bitmap: cbt[i]!.bitmap,
      previousBitmap: cbt[i]!.previousBitmap,
    }));
    const handle = await provider.plan(files, runId);
    const journal = await Journal.create(o.stateDir, {
      runId,
      qmp: o.qmp,
      qga: o.qga,
      repository: o.repository,
      disks: plan,
      storage: handle,
      overlayDir,
    });
    const state = { leftovers: true };
    try {
      const r = await runFlow(
        { ...o, repo },
        qmp,
        agent,
        journal,
        state,
        vm,
        disks,
        cbt,
        plan,
        handle,
        overlayDir,
        started,
        progress,
      );
      return { ...r, recovered: before.recovered };
    } finally {
      // A run that failed but cleaned up has nothing to recover: its journal goes too.
      if (state.leftovers) await journal.close();
      else await journal.remove();
    }
  } finally {
    agent?.close();
    qmp.close();
    repo.close();
  }
}

async function runFlow(
  o: ResolvedVmBackupOptions & { repo: Repository },
  qmp: QmpClient,
  agent: GuestAgentClient | undefined,
  journal: Journal,
  state: { leftovers: boolean },
  vm: VmIdentity,
  disks: readonly VmDisk[],
  cbt: readonly DiskCbtPlan[],
  plan: readonly JournalDisk[],
  handle: StorageSnapshotHandle,
  overlayDir: string,
  started: Date,
  progress: (p: VmBackupProgress) => void,
): Promise<Omit<VmBackupResult, 'recovered'>> {
  const provider = storageProvider(handle.kind);
  let snapshotTaken = false;
  let storageTaken = false;
  const committed = new Set<string>();
  let snapshotStart = 0;
  let snapshotEnd = 0;
  let createSeconds = 0;
  const backups: VmDiskBackup[] = [];
  let failure: unknown;

  // The guest's freeze: thawed by thaw(), by the maxFrozenMs timer, or in the finally.
  let frozen = false;
  let freezeStart = 0;
  let frozenSeconds: number | null = null;
  let frozenFileSystems = 0;
  let thawedByTimer = false;
  let consistent = false;
  let thawTimer: NodeJS.Timeout | undefined;
  let watchdog: ThawWatchdog | undefined;
  let thawing: Promise<void> | undefined;
  const thaw = (): Promise<void> => {
    if (!frozen) return thawing ?? Promise.resolve();
    frozen = false;
    clearTimeout(thawTimer);
    thawing = (async () => {
      try {
        await agent!.execute('guest-fsfreeze-thaw', {}, { timeoutMs: o.qgaTimeoutMs });
      } catch {
        // The connection may be the problem (a freeze that timed out breaks it): once more on a new one.
        const again = await GuestAgentClient.connect(o.qga!, { timeoutMs: o.qgaTimeoutMs });
        try {
          await again.execute('guest-fsfreeze-thaw', {}, { timeoutMs: o.qgaTimeoutMs });
        } finally {
          again.close();
        }
      }
      frozenSeconds = (performance.now() - freezeStart) / 1000;
      watchdog?.disarm();
      await journal.record({ step: 'thawed' });
    })();
    return thawing;
  };

  /** Commits every overlay not committed yet and removes its file; runs also after an error or abort. */
  const commitAll = async (): Promise<void> => {
    for (const d of plan) {
      if (committed.has(d.name)) continue;
      progress({ phase: 'commit', disk: d.name });
      await journal.record({ step: 'commit', disk: d.name });
      await commitOverlay(qmp, d, o.commitTimeoutMs);
      await removeIfPresent(d.overlayFile);
      await journal.record({ step: 'committed', disk: d.name });
      committed.add(d.name);
    }
    await removeDirIfEmpty(overlayDir);
    if (snapshotEnd === 0) snapshotEnd = performance.now(); // the first time every overlay is in
  };

  try {
    await mkdir(overlayDir, { recursive: true, mode: 0o700 });
    if (agent) {
      progress({ phase: 'freeze' });
      await journal.record({ step: 'freeze' });
      frozen = true; // from here on, thaw() runs whatever happens: a lost reply may hide a freeze
      // If this process dies while the guest is frozen, a detached watchdog thaws it.
      watchdog = startThawWatchdog(o.qga!, o.maxFrozenMs);
      freezeStart = performance.now();
      thawTimer = setTimeout(() => {
        thawedByTimer = true;
        thaw().catch(() => undefined); // the finally's thaw() reports a failure
      }, o.maxFrozenMs);
      frozenFileSystems = await agent.execute('guest-fsfreeze-freeze', {}, { timeoutMs: o.maxFrozenMs });
    }
    progress({ phase: 'vm-snapshot' });
    await journal.record({ step: 'vm-snapshot' });
    snapshotStart = performance.now();
    snapshotTaken = true; // from here on, the finally commits whatever exists
    // The dirty-bitmap generations rotate in the same transaction: the frozen one ends at the snapshot.
    await takeVmSnapshot(
      qmp,
      plan,
      disks.flatMap((d, i) => rotationActions(d.nodeName, cbt[i]!)),
      o.qmpTimeoutMs,
    );
    // Application-consistent only when the freeze covered the whole transaction.
    consistent = agent !== undefined && frozen;
    if (agent) {
      // The base files are frozen by the VM snapshot now: the guest need not wait for the storage.
      progress({ phase: 'thaw' });
      await thaw();
    }

    progress({ phase: 'storage-snapshot' });
    await journal.record({ step: 'storage-snapshot' });
    storageTaken = true;
    const t = performance.now();
    const snap = await provider.create(handle);
    createSeconds = (performance.now() - t) / 1000;

    await commitAll();

    for (let i = 0; i < disks.length; i++) {
      o.signal?.throwIfAborted();
      const d = disks[i]!;
      const path = snap.paths[d.realPath]!;
      progress({ phase: 'backup', disk: d.name });
      await journal.record({ step: 'backup', disk: d.name });
      const c = await frozenGeneration(path, cbt[i]!);
      const qcow2 = d.format === 'qcow2';
      const r = await backup({
        ...o.throttle,
        source: path,
        repository: o.repo,
        format: qcow2 ? 'qcow2' : 'raw',
        parent: c.parent,
        ...(c.changedBitmap !== null ? { changedBitmap: c.changedBitmap } : {}),
        readFrom: o.readFrom,
        exclude: o.exclude,
        signal: o.signal,
        progressIntervalMs: o.progressIntervalMs,
        onProgress: (b) => progress({ phase: 'backup', disk: d.name, backup: b }),
      });
      await journal.record({ step: 'backed-up', disk: d.name, id: r.id });
      backups.push({
        name: d.name,
        qdev: d.qdev,
        nodeName: d.nodeName,
        format: d.format,
        file: d.realPath,
        virtualSize: d.virtualSize,
        snapshotPath: path,
        id: r.id,
        cbt: c,
        bytesRead: r.manifest.stats.bytesRead,
        ...(o.readFrom === 'device' && r.readFrom !== undefined ? { readFrom: r.readFrom } : {}),
      });
    }
  } catch (err) {
    failure = err;
  } finally {
    // Cleanup runs whatever happened: the guest is thawed, the overlays go back into their bases,
    // the snapshot is deleted. A step that fails leaves its part to the journal (`lowtide vm recover`).
    const cleanupErrors: unknown[] = [];
    await thaw().catch((err: unknown) => cleanupErrors.push(err));
    try {
      if (snapshotTaken) await commitAll();
      // A backup that is not recorded: the previous generation takes back the new one's writes.
      if (snapshotTaken && failure !== undefined)
        for (const d of plan) if (d.bitmap) await undoRotation(qmp, d.nodeName, d.bitmap, d.previousBitmap ?? null);
      if (storageTaken) {
        progress({ phase: 'storage-delete' });
        await provider.delete(handle);
        await journal.record({ step: 'storage-deleted' });
      }
      await removeDirIfEmpty(overlayDir);
    } catch (err) {
      cleanupErrors.push(err);
    }
    if (cleanupErrors.length === 0) state.leftovers = false;
    else {
      const e = toLowtideError(cleanupErrors[0], 'INTERNAL', 'cleaning up after the VM backup');
      if (failure === undefined) failure = e;
      else (failure as { cleanupError?: unknown }).cleanupError = e;
    }
  }
  if (failure !== undefined) throw toLowtideError(failure, 'INTERNAL');

  const record: VmBackupRecord = {
    kind: 'lowtide-vm-backup',
    version: 1,
    runId: handle.id,
    vm,
    qmp: o.qmp,
    consistency: consistent ? 'application-consistent' : 'crash-consistent',
    vmSnapshotSeconds: (snapshotEnd - snapshotStart) / 1000,
    guestFrozenSeconds: frozenSeconds,
    guestAgent: agent ? { path: o.qga!, frozenFileSystems, thawedByTimer, maxFrozenMs: o.maxFrozenMs } : null,
    storage: {
      kind: handle.kind,
      description: provider.describe(handle),
      createSeconds,
      locations: handle.locations,
    },
    disks: backups,
    started: started.toISOString(),
    finished: new Date().toISOString(),
  };
  state.leftovers = true; // until the previous generations are gone
  const recordPath = await o.repo.writeVmRecord(record.runId, record);
  await journal.record({ step: 'recorded' });
  for (const d of plan) if (d.previousBitmap) await removeBitmaps(qmp, d.nodeName, [d.previousBitmap]);
  await journal.record({ step: 'done' });
  state.leftovers = false;
  progress({ phase: 'done' });
  return { runId: handle.id, record, recordPath };
}

export interface VmRecoverOptions {
  /** The state directory (as given to backupVm, or its default beside the repository). */
  stateDir: string;
  /** Timeout of each QMP command and of connecting (default 30000). */
  qmpTimeoutMs?: number | undefined;
  /** Most time an overlay commit may take (default 600000). */
  commitTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface VmRecoveryReport {
  /** Runs whose leftovers were cleaned up, with what was done. */
  recovered: { runId: string; journal: string; qmp: string; actions: string[] }[];
  /** Runs that could not be cleaned up (their journals stay). */
  failed: { runId: string; journal: string; qmp: string; error: LowtideError }[];
  /** Journals that are not readable (left in place). */
  damaged: string[];
}

/**
 * Finishes or undoes what crashed VM backup runs left (journals in
 * `stateDir` whose process is gone): commits leftover overlays back into
 * their bases, removes overlay files, deletes storage snapshots. Runs that
 * are alive (their journal is locked) are left alone.
 */
export async function recoverVm(options: VmRecoverOptions): Promise<VmRecoveryReport> {
  const o = objectOption('options', options);
  const stateDir = resolve(stringOption('stateDir', o.stateDir));
  const qmpTimeoutMs = integerOption('qmpTimeoutMs', o.qmpTimeoutMs, 30_000, 1, 3_600_000);
  const commitTimeoutMs = integerOption('commitTimeoutMs', o.commitTimeoutMs, 600_000, 1, 86_400_000);
  const signal = signalOption('signal', o.signal);
  const report: VmRecoveryReport = { recovered: [], failed: [], damaged: [] };
  const { journals, damaged } = await leftJournals(stateDir);
  report.damaged.push(...damaged);
  for (const j of journals) {
    try {
      if (signal?.aborted) break;
      const actions = await recoverOne(j, qmpTimeoutMs, commitTimeoutMs);
      await j.remove();
      report.recovered.push({ runId: j.begin.runId, journal: j.path, qmp: j.begin.qmp, actions });
    } catch (err) {
      report.failed.push({
        runId: j.begin.runId,
        journal: j.path,
        qmp: j.begin.qmp,
        error: toLowtideError(err, 'INTERNAL', `recovering ${j.path}`),
      });
    } finally {
      await j.close();
    }
  }
  return report;
}

/** An overlay whose node is gone may still be open under another name (QEMU restarted on it): never remove that. */
async function checkOverlayUnused(qmp: QmpClient, overlayFile: string): Promise<void> {
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
  if (nodes.some((n) => n.file === overlayFile || n.image.filename === overlayFile))
    throw new LowtideError(
      'UNSUPPORTED',
      `the VM uses ${overlayFile} under another node name; it is left in place (commit it into its base first)`,
      { path: overlayFile },
    );
}

async function recoverOne(j: LeftJournal, qmpTimeoutMs: number, commitTimeoutMs: number): Promise<string[]> {
  const b = j.begin;
  const steps = new Set(j.records.map((r) => r.step));
  const committed = new Set(j.records.flatMap((r) => (r.step === 'committed' ? [r.disk] : [])));
  const actions: string[] = [];
  if (steps.has('freeze') && !steps.has('thawed') && b.qga !== undefined) {
    const agent = await GuestAgentClient.connect(b.qga, { timeoutMs: qmpTimeoutMs });
    try {
      if ((await agent.execute('guest-fsfreeze-status', {}, { timeoutMs: qmpTimeoutMs })) === 'frozen') {
        await agent.execute('guest-fsfreeze-thaw', {}, { timeoutMs: qmpTimeoutMs });
        actions.push(`thawed the guest's file systems (${b.qga})`);
      }
    } finally {
      agent.close();
    }
    await j.record({ step: 'thawed' });
  }
  if (steps.has('vm-snapshot')) {
    const left = b.disks.filter((d) => !committed.has(d.name));
    if (left.length > 0) {
      let qmp: QmpClient | undefined;
      try {
        qmp = await QmpClient.connect(b.qmp, { timeoutMs: qmpTimeoutMs, commandTimeoutMs: qmpTimeoutMs });
      } catch (err) {
        // Without the VM, an overlay that exists may hold writes its base does not have: keep it.
        const orphans: string[] = [];
        for (const d of left) {
          try {
            await open(d.overlayFile, 'r').then((fh) => fh.close());
            orphans.push(d.overlayFile);
          } catch {
            // No overlay file: the snapshot was never taken for this disk.
          }
        }
        if (orphans.length > 0)
          throw new LowtideError(
            'UNSUPPORTED',
            `the VM's QMP socket ${b.qmp} is not reachable (${toLowtideError(err).message}), and the overlays ` +
              `${orphans.join(', ')} may hold writes their base files do not have; start the VM or commit them ` +
              'with qemu-img commit, then run lowtide vm recover again',
            { cause: err },
          );
      }
      try {
        for (const d of left) {
          if (qmp) {
            const r = await commitOverlay(qmp, d, commitTimeoutMs);
            if (r === 'committed') actions.push(`committed the overlay of ${d.name} into ${d.file}`);
            else await checkOverlayUnused(qmp, d.overlayFile);
          }
          await removeIfPresent(d.overlayFile);
          await j.record({ step: 'committed', disk: d.name });
        }
      } finally {
        qmp?.close();
      }
    }
  }
  for (const d of b.disks) await removeIfPresent(d.overlayFile);
  await removeDirIfEmpty(b.overlayDir);
  if (steps.has('vm-snapshot')) actions.push(...(await recoverBitmaps(j, steps.has('recorded'), qmpTimeoutMs)));
  if (steps.has('storage-snapshot') && !steps.has('storage-deleted')) {
    const provider = storageProvider(b.storage.kind);
    await provider.delete(b.storage);
    await j.record({ step: 'storage-deleted' });
    actions.push(`deleted the storage snapshot (${provider.describe(b.storage)})`);
  }
  return actions;
}

/**
 * The dirty-bitmap generations of a crashed run: a recorded backup's
 * previous generations are removed; an unrecorded one's rotation is undone
 * (lib/snapshot/cbt.ts). A VM that is not reachable keeps its bitmaps: the
 * next backup finds a generation no backup was recorded at and backs up in full.
 */
async function recoverBitmaps(j: LeftJournal, recorded: boolean, timeoutMs: number): Promise<string[]> {
  const disks = j.begin.disks.filter((d) => typeof d.bitmap === 'string');
  if (disks.length === 0) return [];
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(j.begin.qmp, { timeoutMs, commandTimeoutMs: timeoutMs });
  } catch (err) {
    return [`dirty bitmaps left as they are: ${j.begin.qmp} is not reachable (${toLowtideError(err).message})`];
  }
  const actions: string[] = [];
  try {
    for (const d of disks) {
      if (recorded) {
        const gone = await removeBitmaps(qmp, d.nodeName, d.previousBitmap ? [d.previousBitmap] : []);
        for (const name of gone) actions.push(`removed the dirty bitmap ${name} of ${d.nodeName}`);
      } else {
        const done = await undoRotation(qmp, d.nodeName, d.bitmap!, d.previousBitmap ?? null);
        if (done !== undefined) actions.push(done);
      }
    }
  } finally {
    qmp.close();
  }
  return actions;
}

export interface DescribeVmOptions {
  /** Timeout of connecting and of each command (default 5000). */
  timeoutMs?: number | undefined;
}

/** The identity and disks of the running VM behind the QMP socket `qmp`. */
export async function describeVm(
  qmp: string,
  options: DescribeVmOptions = {},
): Promise<{ vm: VmIdentity; disks: VmDisk[] }> {
  const path = stringOption('qmp', qmp);
  const o = objectOption('options', options);
  const timeoutMs = integerOption('timeoutMs', o.timeoutMs, 5000, 1, 3_600_000);
  const client = await QmpClient.connect(path, { timeoutMs, commandTimeoutMs: timeoutMs });
  try {
    return { vm: await vmIdentity(client), disks: await listVmDisks(client) };
  } finally {
    client.close();
  }
}
