/**
 * Storage snapshots: copy-on-write copies of the files a VM snapshot froze,
 * taken on the storage itself, read by the backup after the VM is back on
 * its own files. Every provider fits one interface: plan the snapshot (its
 * names are decided before anything is made, so a journal can record them
 * first), create it (the paths to read), delete it (idempotent: deleting
 * what is gone already is not an error) and describe it.
 */

export type StorageKind = 'reflink' | 'btrfs';

export const STORAGE_KINDS: readonly StorageKind[] = ['reflink', 'btrfs'];

/** Everything needed to find and delete a storage snapshot, also from another process (JSON). */
export interface StorageSnapshotHandle {
  kind: StorageKind;
  /** The run's id, part of every name the snapshot uses. */
  id: string;
  /** Each frozen file (real path) → the path of its frozen copy, read-only to lowtide. */
  paths: Record<string, string>;
  /** What delete() removes: reflink, the hidden directories; btrfs, the snapshot subvolumes. */
  locations: string[];
}

export interface StorageSnapshot {
  handle: StorageSnapshotHandle;
  /** Each frozen file (real path) → the path to read it from. */
  paths: Record<string, string>;
}

export interface StorageSnapshotProvider {
  readonly kind: StorageKind;
  /**
   * Checks that every file can be snapshotted by this provider, without
   * taking a snapshot: UNSUPPORTED naming the file system when it cannot.
   */
  check(files: readonly string[]): Promise<void>;
  /** The handle create() will make for these files and this id; nothing is created. */
  plan(files: readonly string[], id: string): Promise<StorageSnapshotHandle>;
  /** Takes the snapshot planned as `handle`; on failure removes what it made and throws. */
  create(handle: StorageSnapshotHandle): Promise<StorageSnapshot>;
  /** Deletes the snapshot; what is gone already is skipped. */
  delete(handle: StorageSnapshotHandle): Promise<void>;
  /** One line for people: what the snapshot is and where. */
  describe(handle: StorageSnapshotHandle): string;
}
