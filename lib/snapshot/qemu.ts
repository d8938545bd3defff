/**
 * The QEMU hypervisor side: a running VM's disks as its QMP monitor reports
 * them (`query-block` for the guest devices, their top nodes and files), and
 * the VM's identity (name, UUID, state).
 */
import { realpath } from 'node:fs/promises';
import { LowtideError } from '../errors.js';
import type { QmpBlockInfo, QmpClient, QmpDirtyBitmap, QmpTransactionAction } from './qmp.js';

/** One disk of a running VM. */
export interface VmDisk {
  /**
   * A short stable name for the disk: the device id given with `-device
   * ...,id=ID` (from the qdev path), else the legacy drive name, else the node name.
   */
  name: string;
  /** The guest device's qdev path, e.g. /machine/peripheral/vd0/virtio-backend ('' when none). */
  qdev: string;
  /** The legacy drive name ('' for disks attached with -blockdev). */
  device: string;
  /** The node name of the device's top (format) node. */
  nodeName: string;
  /** The image format of the top node: raw, qcow2, ... */
  format: string;
  /** The image file as QEMU names it. */
  file: string;
  /** The image file's real path (links resolved), or the name QEMU gave when it cannot be resolved. */
  realPath: string;
  /** Guest-visible size in bytes. */
  virtualSize: number;
  /** How many backing files lie below the top image (0: the disk is on its own file). */
  backingDepth: number;
  readOnly: boolean;
  /** The top node's dirty bitmaps (persistent ones live in a qcow2 image). */
  bitmaps: QmpDirtyBitmap[];
}

export interface VmIdentity {
  name: string | undefined;
  uuid: string;
  status: string;
  running: boolean;
  qemuVersion: string;
}

function diskName(b: QmpBlockInfo, nodeName: string): string {
  const m = /^\/machine\/peripheral\/([^/]+)(\/|$)/.exec(b.qdev ?? '');
  if (m) return m[1]!;
  if (b.device) return b.device;
  return nodeName;
}

/** The VM's disks with a medium, in the order QEMU lists them. */
export async function listVmDisks(qmp: QmpClient): Promise<VmDisk[]> {
  const blocks = await qmp.execute('query-block', {});
  const disks: VmDisk[] = [];
  for (const b of blocks) {
    const ins = b.inserted;
    if (!ins) continue;
    const file = ins.image.filename || ins.file;
    let real = file;
    try {
      real = await realpath(file);
    } catch {
      // Not a path on this host (e.g. a network protocol); kept as QEMU names it.
    }
    disks.push({
      name: diskName(b, ins['node-name']),
      qdev: b.qdev ?? '',
      device: b.device,
      nodeName: ins['node-name'],
      format: ins.drv,
      file,
      realPath: real,
      virtualSize: ins.image['virtual-size'],
      backingDepth: ins.backing_file_depth ?? 0,
      readOnly: ins.ro,
      bitmaps: ins['dirty-bitmaps'] ?? [],
    });
  }
  const names = new Set<string>();
  for (const d of disks) {
    if (names.has(d.name)) throw new LowtideError('UNSUPPORTED', `two disks of the VM are both named ${d.name}`);
    names.add(d.name);
  }
  return disks;
}

export async function vmIdentity(qmp: QmpClient): Promise<VmIdentity> {
  const [name, uuid, status] = await Promise.all([
    qmp.execute('query-name', {}),
    qmp.execute('query-uuid', {}),
    qmp.execute('query-status', {}),
  ]);
  return { name: name.name, uuid: uuid.UUID, status: status.status, running: status.running, qemuVersion: qmp.version };
}

/** A disk's VM snapshot: the overlay QEMU sends new writes to, and the job that commits it back. */
export interface OverlayPlan {
  /** The node the snapshot is taken of (the disk's top node). */
  nodeName: string;
  overlayFile: string;
  overlayNode: string;
  jobId: string;
}

/**
 * One `transaction` with a `blockdev-snapshot-sync` for every disk (qcow2
 * overlays): either all disks are on their overlays afterwards or none is.
 * `extraActions` go into the same transaction (e.g. dirty-bitmap rotation).
 */
export async function takeVmSnapshot(
  qmp: QmpClient,
  overlays: readonly OverlayPlan[],
  extraActions: readonly QmpTransactionAction[] = [],
  timeoutMs?: number,
): Promise<void> {
  const actions: QmpTransactionAction[] = overlays.map((o) => ({
    type: 'blockdev-snapshot-sync',
    data: {
      'node-name': o.nodeName,
      'snapshot-file': o.overlayFile,
      'snapshot-node-name': o.overlayNode,
      format: 'qcow2',
    },
  }));
  await qmp.execute('transaction', { actions: [...actions, ...extraActions] }, { timeoutMs });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Merges a disk's overlay back into its base with an active `block-commit`
 * (BLOCK_JOB_READY → block-job-complete → BLOCK_JOB_COMPLETED), after which
 * the disk runs on its base node again. Idempotent: a commit job left by an
 * earlier process is driven to its end; an overlay that is not in the graph
 * any more is 'absent'. Does not remove the overlay file.
 */
export async function commitOverlay(
  qmp: QmpClient,
  o: Pick<OverlayPlan, 'overlayNode' | 'jobId'>,
  timeoutMs = 600_000,
): Promise<'committed' | 'absent'> {
  const deadline = Date.now() + timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const mine = (d: Record<string, unknown>): boolean => d.device === o.jobId;
  const existing = (await qmp.execute('query-block-jobs', {})).find((j) => j.device === o.jobId);
  if (!existing) {
    const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
    if (!nodes.some((n) => n['node-name'] === o.overlayNode)) return 'absent';
    await qmp.execute('block-commit', { 'job-id': o.jobId, device: o.overlayNode });
    await qmp.waitForEvent('BLOCK_JOB_READY', mine, left());
    await qmp.execute('block-job-complete', { device: o.jobId });
    const done = await qmp.waitForEvent('BLOCK_JOB_COMPLETED', mine, left());
    if (typeof done.data.error === 'string')
      throw new LowtideError('IO_ERROR', `committing ${o.overlayNode}: ${done.data.error}`);
    return 'committed';
  }
  // A job an earlier process started: its events may be gone, so poll its state.
  for (;;) {
    const job = (await qmp.execute('query-block-jobs', {})).find((j) => j.device === o.jobId);
    if (!job) return 'committed';
    if (job.status === 'ready') {
      await qmp.execute('block-job-complete', { device: o.jobId }).catch((err: LowtideError) => {
        if (err.code !== 'QMP_ERROR') throw err; // its state changed meanwhile: the next poll sees it
      });
    } else if (job.status === 'concluded') {
      await qmp.execute('job-dismiss', { id: o.jobId }).catch(() => undefined);
    }
    if (Date.now() > deadline)
      throw new LowtideError('TIMEOUT', `the commit job ${o.jobId} did not finish within ${timeoutMs} ms`);
    await sleep(100);
  }
}
