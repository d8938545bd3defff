/**
 * Changed-block tracking of a running VM's qcow2 disks with QEMU's
 * persistent dirty bitmaps, one generation per backup.
 *
 * Each backup adds a new bitmap (`lowtide-<run id>`) and disables the one
 * the previous backup added, in the same QMP `transaction` as the VM
 * snapshot. When the snapshot is taken QEMU reopens the base image
 * read-only and stores its persistent bitmaps in the file, so the storage
 * snapshot of the base holds the disabled generation, not flagged in use:
 * exactly the writes between the two snapshots. The incremental reads the
 * extents it marks; writes after the snapshot (the overlay's commit among
 * them) go to the new generation. After the backup is recorded the old
 * generation is removed; after a failure it takes back what the new one
 * recorded (merge) and records again, so the previous backup stays a valid
 * parent.
 */
import { LowtideError } from '../errors.js';
import type { VmDisk } from './qemu.js';
import type { QmpClient, QmpDirtyBitmap, QmpTransactionAction } from './qmp.js';

/** Names of the bitmaps lowtide adds; any other bitmap is left alone. */
export const BITMAP_PREFIX = 'lowtide-';

/** A backup taken at a bitmap generation: the disk's backup id and size then. */
export interface CbtBase {
  bitmap: string;
  backupId: string;
  virtualSize: number;
}

/** What a run does with one disk's bitmaps. */
export interface DiskCbtPlan {
  /** The generation this run adds (null: raw disk, no persistent bitmaps). */
  bitmap: string | null;
  /** The generation this run freezes and reads for an incremental (null: full backup). */
  previousBitmap: string | null;
  /** The incremental's parent backup (null: full backup). */
  parent: string | null;
  /** Why the backup is full (null for an incremental). */
  fullReason: string | null;
  /** lowtide bitmaps of earlier runs that no backup can use: removed before the snapshot. */
  stale: string[];
}

/**
 * Decides a disk's generations. `base(bitmap)` gives the backup in the
 * repository taken at that generation (undefined when none is);
 * `lastBitmap` is the generation the disk's latest recorded backup added.
 */
export function planDiskCbt(
  disk: Pick<VmDisk, 'format' | 'bitmaps' | 'virtualSize'>,
  runId: string,
  base: (bitmap: string) => CbtBase | undefined,
  lastBitmap: string | undefined,
): DiskCbtPlan {
  if (disk.format !== 'qcow2')
    return {
      bitmap: null,
      previousBitmap: null,
      parent: null,
      fullReason: `${disk.format} disk: QEMU keeps persistent dirty bitmaps in qcow2 images only`,
      stale: [],
    };
  const ours = disk.bitmaps.filter((b) => b.name.startsWith(BITMAP_PREFIX));
  const full = (fullReason: string): DiskCbtPlan => ({
    bitmap: `${BITMAP_PREFIX}${runId}`,
    previousBitmap: null,
    parent: null,
    fullReason,
    stale: ours.map((b) => b.name),
  });
  const recording = ours.filter((b) => b.recording);
  if (recording.length === 0) {
    // QEMU loads a bitmap an unclean shutdown left as inconsistent, and not recording.
    const broken = ours.find((b) => b.inconsistent === true);
    if (broken !== undefined) return full(bitmapProblem(broken)!);
    if (lastBitmap === undefined) return full('first backup of the disk with changed-block tracking');
    return full(
      `the dirty bitmap ${lastBitmap} of the last backup is not on the disk ` +
        '(removed, or the VM runs from another image)',
    );
  }
  if (recording.length > 1)
    return full(`more than one lowtide dirty bitmap records writes (${recording.map((b) => b.name).join(', ')})`);
  const current = recording[0]!;
  const unusable = bitmapProblem(current);
  if (unusable !== undefined) return full(unusable);
  const b = base(current.name);
  if (b === undefined)
    return full(
      `no backup in the repository was taken at the dirty bitmap ${current.name} ` +
        '(a backup in between failed, or went to another repository)',
    );
  if (b.virtualSize !== disk.virtualSize)
    return full(`the disk's size changed since backup ${b.backupId} (${b.virtualSize} then ${disk.virtualSize} bytes)`);
  return {
    bitmap: `${BITMAP_PREFIX}${runId}`,
    previousBitmap: current.name,
    parent: b.backupId,
    fullReason: null,
    stale: ours.filter((x) => x !== current).map((x) => x.name),
  };
}

function bitmapProblem(b: QmpDirtyBitmap): string | undefined {
  if (b.inconsistent === true)
    return `the dirty bitmap ${b.name} is inconsistent (the image was not closed cleanly): its content is not valid`;
  if (b.busy) return `the dirty bitmap ${b.name} is in use by a block job or an export`;
  if (!b.persistent) return `the dirty bitmap ${b.name} is not persistent`;
  return undefined;
}

/** The actions that rotate the generation, for the snapshot's transaction. */
export function rotationActions(nodeName: string, plan: DiskCbtPlan): QmpTransactionAction[] {
  if (plan.bitmap === null) return [];
  const actions: QmpTransactionAction[] = [
    { type: 'block-dirty-bitmap-add', data: { node: nodeName, name: plan.bitmap, persistent: true } },
  ];
  if (plan.previousBitmap !== null)
    actions.push({ type: 'block-dirty-bitmap-disable', data: { node: nodeName, name: plan.previousBitmap } });
  return actions;
}

/** The dirty bitmaps of the node `nodeName` as the disk's top node; throws when it is not a disk's top node. */
async function nodeBitmaps(qmp: QmpClient, nodeName: string): Promise<QmpDirtyBitmap[]> {
  const blocks = await qmp.execute('query-block', {});
  const b = blocks.find((x) => x.inserted?.['node-name'] === nodeName);
  if (!b)
    throw new LowtideError(
      'UNSUPPORTED',
      `the node ${nodeName} is not a disk's top node (is the VM still on an overlay?): its bitmaps are left as they are`,
    );
  return b.inserted!['dirty-bitmaps'] ?? [];
}

/** Removes lowtide bitmaps `names` from the node (those that are there). */
export async function removeBitmaps(qmp: QmpClient, nodeName: string, names: readonly string[]): Promise<string[]> {
  const present = new Set((await nodeBitmaps(qmp, nodeName)).map((b) => b.name));
  const removed: string[] = [];
  for (const name of names) {
    if (!present.has(name)) continue;
    await qmp.execute('block-dirty-bitmap-remove', { node: nodeName, name });
    removed.push(name);
  }
  return removed;
}

/**
 * Undoes a rotation whose backup was not recorded: the new generation's
 * writes are merged into the previous one, which records again, and the
 * new one is removed (one transaction). Without a previous generation the
 * new one is just removed. Returns what it did, or undefined when there was
 * nothing to undo.
 */
export async function undoRotation(
  qmp: QmpClient,
  nodeName: string,
  bitmap: string,
  previousBitmap: string | null,
): Promise<string | undefined> {
  const present = new Set((await nodeBitmaps(qmp, nodeName)).map((b) => b.name));
  if (!present.has(bitmap)) return undefined; // the transaction was not taken
  if (previousBitmap === null || !present.has(previousBitmap)) {
    await qmp.execute('block-dirty-bitmap-remove', { node: nodeName, name: bitmap });
    return `removed the dirty bitmap ${bitmap} of ${nodeName}`;
  }
  await qmp.execute('transaction', {
    actions: [
      { type: 'block-dirty-bitmap-merge', data: { node: nodeName, target: previousBitmap, bitmaps: [bitmap] } },
      { type: 'block-dirty-bitmap-enable', data: { node: nodeName, name: previousBitmap } },
      { type: 'block-dirty-bitmap-remove', data: { node: nodeName, name: bitmap } },
    ],
  });
  return `merged the dirty bitmap ${bitmap} of ${nodeName} back into ${previousBitmap}`;
}
