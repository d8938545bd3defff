/** The storage snapshot providers by name. */
import { BtrfsStorage } from './btrfs.js';
import { ReflinkStorage } from './reflink.js';
import type { StorageKind, StorageSnapshotProvider } from './types.js';

export function storageProvider(kind: StorageKind): StorageSnapshotProvider {
  return kind === 'btrfs' ? new BtrfsStorage() : new ReflinkStorage();
}

export { BtrfsStorage, ReflinkStorage };
export * from './types.js';
