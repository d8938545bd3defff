/**
 * Several sources into one repository: up to `parallel` backups at once,
 * under one writer lock. The admission limit decides when the next one may
 * start: while the latency the running jobs see is above it, no new job starts
 * (running jobs keep going, slowed down by their own throttle).
 */
import { LowtideError, toLowtideError } from '../errors.js';
import { integerOption, objectOption } from '../options.js';
import { withRepository, type Repository } from '../repo/repository.js';
import { AdmissionGate } from '../throttle/limits.js';
import { resolveThrottleSettings, type MultiJobThrottleSettings } from '../throttle/job-settings.js';
import { backupUnderHeldLock, type BackupOptions, type BackupProgress, type BackupResult } from './backup.js';

export interface BackupManyOptions
  extends Omit<BackupOptions, 'source' | 'onProgress' | 'changed' | 'parent'>, MultiJobThrottleSettings {
  sources: readonly string[];
  /** Backups running at once (default 1). */
  parallel?: number | undefined;
  /** Called when a job starts and when it ends. */
  onJob?: ((event: BackupJobEvent) => void) | undefined;
  onProgress?: ((source: string, p: BackupProgress) => void) | undefined;
}

export type BackupJobEvent =
  | { kind: 'start'; source: string; running: number }
  | { kind: 'waiting'; source: string; latencyMs: number; admissionLimitMs: number }
  | { kind: 'done'; source: string; result: BackupResult }
  | { kind: 'failed'; source: string; error: LowtideError };

export interface BackupManyResult {
  results: {
    source: string;
    ok: boolean;
    id?: string;
    /** The backup was read in full instead of building on its parent: why (BackupResult.fallback). */
    fallback?: string;
    error?: { code: string; message: string };
  }[];
  /** Times a job had to wait for the admission limit. */
  admissionWaits: number;
  /** Temporary files an earlier writer that did not finish had left in the repository, removed when the lock was taken. */
  staleFilesRemoved: { files: number; bytes: number };
}

/**
 * backupMany()'s own options, checked. The options it passes on to every
 * backup are checked by each backup, whose failure is that source's result.
 */
interface ResolvedBackupManyOptions {
  sources: readonly string[];
  parallel: number;
  gate: AdmissionGate | undefined;
}

function resolveBackupManyOptions(options: unknown): ResolvedBackupManyOptions {
  const opts = objectOption('options', options);
  const sources = opts.sources as readonly string[];
  if (!Array.isArray(sources) || sources.length === 0 || sources.some((s) => typeof s !== 'string' || s === '')) {
    throw new LowtideError('INVALID_ARGUMENT', 'sources: expected a non-empty array of paths');
  }
  const parallel = integerOption('parallel', opts.parallel, 1, 1, 64);
  const admissionLimitMs = resolveThrottleSettings(opts).admissionLimitMs;
  const gate = admissionLimitMs !== undefined ? new AdmissionGate({ admissionLimitMs }) : undefined;
  return { sources, parallel, gate };
}

export async function backupMany(options: BackupManyOptions): Promise<BackupManyResult> {
  const { sources, parallel, gate } = resolveBackupManyOptions(options);
  return withRepository(options.repository, options.password, (repo) =>
    backupAll(repo, options, sources, parallel, gate),
  );
}

async function backupAll(
  repo: Repository,
  options: BackupManyOptions,
  sources: readonly string[],
  parallel: number,
  gate: AdmissionGate | undefined,
): Promise<BackupManyResult> {
  const lock = await repo.lock(`lowtide backup of ${sources.length} sources`);
  const latency = new Map<string, number>(); // source -> smoothed latency (ms) its job sees now
  const running = new Set<Promise<void>>();
  const results: BackupManyResult['results'] = sources.map((s) => ({ source: s, ok: false }));
  let admissionWaits = 0;
  // A job that has not measured anything yet counts as unknown: the next one waits for it.
  const current = (): number => {
    const v = [...latency.values()];
    return v.some((x) => Number.isNaN(x)) ? Infinity : Math.max(0, ...v);
  };
  const blocked = (): boolean => {
    const c = current();
    return gate !== undefined && (!Number.isFinite(c) || !gate.mayStart(c));
  };
  try {
    for (let i = 0; i < sources.length; i++) {
      const source = sources[i]!;
      while (running.size >= parallel) await Promise.race(running);
      if (gate && running.size > 0 && blocked()) {
        admissionWaits++;
        const now = current();
        options.onJob?.({
          kind: 'waiting',
          source,
          latencyMs: Number.isFinite(now) ? now : -1,
          admissionLimitMs: gate.admissionLimitMs,
        });
        while (running.size > 0 && blocked()) {
          await Promise.race([...running, new Promise((r) => setTimeout(r, 100))]);
        }
      }
      if (options.signal?.aborted) break;
      options.onJob?.({ kind: 'start', source, running: running.size + 1 });
      if (gate) latency.set(source, NaN);
      const jobOptions: BackupOptions = {
        ...options,
        source,
        repository: repo,
        onProgress: (p: BackupProgress) => {
          latency.set(source, p.throttle.latencyMs);
          options.onProgress?.(source, p);
        },
        progressIntervalMs: 100,
      };
      const job: Promise<void> = backupUnderHeldLock(jobOptions)
        .then(
          (result) => {
            results[i] = {
              source,
              ok: true,
              id: result.id,
              ...(result.fallback !== undefined ? { fallback: result.fallback } : {}),
            };
            options.onJob?.({ kind: 'done', source, result });
          },
          (err: unknown) => {
            const error = toLowtideError(err, 'INTERNAL');
            results[i] = { source, ok: false, error: { code: error.code, message: error.message } };
            options.onJob?.({ kind: 'failed', source, error });
          },
        )
        .finally(() => {
          latency.delete(source);
          running.delete(job);
        });
      running.add(job);
    }
    await Promise.all(running);
  } finally {
    await Promise.allSettled(running);
    await lock.release();
  }
  if (options.signal?.aborted)
    throw new LowtideError('ABORTED', 'the backups were aborted', { cause: options.signal.reason });
  return { results, admissionWaits, staleFilesRemoved: { ...lock.staleFilesRemoved } };
}
