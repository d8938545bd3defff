/**
 * The one error class lowtide throws on purpose. Every error has a stable
 * `code`; I/O errors also carry `errno` and the byte `offset` involved.
 */

/** Stable error codes. Add new ones here, never rename. */
export const ErrorCodes = [
  'INVALID_ARGUMENT', // an option or argument is wrong (the message names it)
  'NOT_FOUND', // a path does not exist
  'PERMISSION_DENIED', // the OS refused access
  'OPEN_FAILED', // opening a source failed for another reason
  'NOT_A_SOURCE', // a directory, socket, ... where a file or block device was expected
  'EMPTY_SOURCE', // a source of 0 bytes
  'DIRECT_UNSUPPORTED', // O_DIRECT was required but is refused
  'URING_UNAVAILABLE', // io_uring was required but the kernel refuses it
  'UNALIGNED', // an offset or size does not meet the alignment the source needs
  'OUT_OF_RANGE', // an extent reaches past the end of the source
  'IO_ERROR', // a read or write failed (errno and offset say more)
  'SHORT_READ', // the source ended before the requested bytes
  'CLOSED', // the source or reader was closed
  'BUSY', // a call that needs exclusive use ran concurrently
  'ABORTED', // an AbortSignal fired
  'OUTPUT_EXISTS', // the output exists and overwriting was not requested
  'WRITE_FAILED', // writing an output failed
  'NO_SPACE', // the target ran out of space
  'FAT_CORRUPT', // a FAT file system is inconsistent
  'PARTITION_CORRUPT', // a partition table is inconsistent
  'REPO_NOT_FOUND', // no repository at the path
  'REPO_EXISTS', // init on a path that already holds something
  'REPO_FORMAT', // a repository of an unknown format or version, or a damaged config
  'REPO_LOCKED', // another writer holds the repository
  'REPO_FULL', // the repository's file system is full
  'REPO_CORRUPT', // a manifest, index, catalog or other part of a repository is damaged or not what the format allows
  'BACKUP_NOT_FOUND', // no backup with that id
  'CHUNK_MISSING', // a chunk a backup needs is not in the repository
  'CHUNK_CORRUPT', // a chunk's content does not match its digest
  'SOURCE_CHANGED', // a file changed (size or layout) while it was read from its block device
  'TARGET_TOO_SMALL', // a restore target smaller than the image
  'UNSUPPORTED', // valid input that this version cannot handle
  'QCOW2_CORRUPT', // a qcow2 image is inconsistent (header, tables, compressed data, backing chain)
  'BACKING_REFUSED', // a backing file that the format-probing rule does not allow to follow
  'BITMAP_IN_USE', // a qcow2 dirty bitmap flagged in use: its content is not valid
  'INTERNAL', // a bug: please report it
  'TIMEOUT', // a peer (QMP, the guest agent) did not answer in time
  'QMP_ERROR', // QEMU answered a command with an error (the message has its class and desc)
  'PROTOCOL_ERROR', // a peer that does not speak the expected protocol (not QMP, garbage, closed early)
  'BAD_PASSWORD', // the passphrase opens none of an encrypted repository's keys
  'PASSWORD_REQUIRED', // an encrypted repository was opened without a passphrase
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

export interface LowtideErrorDetails {
  cause?: unknown;
  errno?: number;
  offset?: number;
  path?: string;
}

export class LowtideError extends Error {
  /** 'AbortError' for code ABORTED (as DOM and Node name an abort), else 'LowtideError'. */
  override readonly name: 'LowtideError' | 'AbortError';
  readonly code: ErrorCode;
  readonly errno?: number;
  readonly offset?: number;
  readonly path?: string;

  constructor(code: ErrorCode, message: string, details: LowtideErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = code === 'ABORTED' ? 'AbortError' : 'LowtideError';
    this.code = code;
    if (details.errno !== undefined) this.errno = details.errno;
    if (details.offset !== undefined) this.offset = details.offset;
    if (details.path !== undefined) this.path = details.path;
  }
}

const knownCodes: ReadonlySet<string> = new Set(ErrorCodes);

function errnoCode(code: string | undefined): ErrorCode | undefined {
  switch (code) {
    case 'ENOENT':
      return 'NOT_FOUND';
    case 'EACCES':
    case 'EPERM':
      return 'PERMISSION_DENIED';
    case 'ENOSPC':
    case 'EDQUOT':
      return 'NO_SPACE';
    case 'EISDIR':
      return 'NOT_A_SOURCE';
    case 'EEXIST':
      return 'OUTPUT_EXISTS';
    default:
      return undefined;
  }
}

/**
 * Turns anything thrown by the addon or by Node into a LowtideError, keeping
 * the original as `cause`. `fallback` is the code used when nothing better is
 * known. The new error's stack is captured here, in the caller's frame chain.
 */
export function toLowtideError(err: unknown, fallback: ErrorCode = 'INTERNAL', context?: string): LowtideError {
  if (err instanceof LowtideError) return err;
  if (err instanceof Error) {
    const e = err as Error & { code?: unknown; errno?: unknown; offset?: unknown; path?: unknown };
    const raw = typeof e.code === 'string' ? e.code : undefined;
    const code: ErrorCode =
      raw !== undefined && knownCodes.has(raw) ? (raw as ErrorCode) : (errnoCode(raw) ?? fallback);
    const errno = typeof e.errno === 'number' ? Math.abs(e.errno) : undefined;
    const offset = typeof e.offset === 'number' ? e.offset : undefined;
    const path = typeof e.path === 'string' ? e.path : undefined;
    const message = context ? `${context}: ${e.message}` : e.message;
    return new LowtideError(code, message, { cause: err, errno, offset, path });
  }
  if (err !== null && typeof err === 'object' && 'name' in err && (err as { name: unknown }).name === 'AbortError') {
    return new LowtideError('ABORTED', 'the operation was aborted', { cause: err });
  }
  return new LowtideError(fallback, context ? `${context}: ${String(err)}` : String(err), { cause: err });
}
