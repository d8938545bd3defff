/**
 * A QMP client (the QEMU Machine Protocol) over a unix socket: JSON objects,
 * one per line. After connecting, QEMU sends a greeting; the client answers
 * with `qmp_capabilities` and may then send commands. Every command carries
 * an id and its reply is matched by that id; every event read from the
 * socket is queued, so an event that arrives before or between replies is
 * found by a later waitForEvent(). Every command and every wait has a
 * timeout. Errors are LowtideErrors: QMP_ERROR (QEMU refused the command: its
 * class and description), TIMEOUT, PROTOCOL_ERROR (not QMP, garbage, the
 * connection closed) and CLOSED.
 */
import { createConnection, type Socket } from 'node:net';
import { LowtideError } from '../errors.js';

/** One QMP event as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** Seconds since the epoch (QEMU's timestamp). */
  timestamp: number;
}

/** A block device as `query-block` reports it (the fields lowtide uses). */
export interface QmpBlockInfo {
  device: string;
  qdev?: string | undefined;
  inserted?:
    | {
        'node-name': string;
        file: string;
        drv: string;
        ro: boolean;
        backing_file?: string | undefined;
        backing_file_depth?: number | undefined;
        image: QmpImageInfo;
        /** The top node's dirty bitmaps. */
        'dirty-bitmaps'?: QmpDirtyBitmap[] | undefined;
      }
    | undefined;
}

/** A dirty bitmap as `query-block` reports it. */
export interface QmpDirtyBitmap {
  name: string;
  /** Recording writes (enabled). */
  recording: boolean;
  /** Stored in the image file (qcow2) when QEMU closes it or reopens it read-only. */
  persistent: boolean;
  /** Used by a block job or an NBD export: cannot be changed now. */
  busy: boolean;
  /** Loaded from an image that was not closed cleanly: its content is not valid. */
  inconsistent?: boolean | undefined;
  granularity: number;
  /** Bytes marked dirty. */
  count: number;
}

export interface QmpImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'backing-filename'?: string | undefined;
  'backing-image'?: QmpImageInfo | undefined;
}

/** A node of the block graph as `query-named-block-nodes` reports it (the fields lowtide uses). */
export interface QmpBlockNode {
  'node-name': string;
  drv: string;
  file: string;
  ro: boolean;
  backing_file?: string | undefined;
  backing_file_depth?: number | undefined;
  image: QmpImageInfo;
}

export interface QmpBlockJob {
  type: string;
  device: string;
  status: string;
  ready: boolean;
  len: number;
  offset: number;
}

/** One action of a `transaction`. */
export type QmpTransactionAction = { type: string; data: Record<string, unknown> };

/** The commands lowtide sends, with their arguments and typed results. */
export interface QmpCommands {
  qmp_capabilities: { args: Record<string, never>; result: Record<string, never> };
  'query-status': { args: Record<string, never>; result: { running: boolean; status: string } };
  'query-name': { args: Record<string, never>; result: { name?: string | undefined } };
  'query-uuid': { args: Record<string, never>; result: { UUID: string } };
  'query-block': { args: Record<string, never>; result: QmpBlockInfo[] };
  'query-named-block-nodes': { args: { flat?: boolean }; result: QmpBlockNode[] };
  'query-block-jobs': { args: Record<string, never>; result: QmpBlockJob[] };
  'blockdev-snapshot-sync': {
    args: { 'node-name': string; 'snapshot-file': string; 'snapshot-node-name': string; format: string };
    result: Record<string, never>;
  };
  transaction: { args: { actions: QmpTransactionAction[] }; result: Record<string, never> };
  'block-dirty-bitmap-remove': { args: { node: string; name: string }; result: Record<string, never> };
  'block-commit': {
    args: { 'job-id': string; device: string; 'auto-dismiss'?: boolean };
    result: Record<string, never>;
  };
  'block-job-complete': { args: { device: string }; result: Record<string, never> };
  'block-job-cancel': { args: { device: string; force?: boolean }; result: Record<string, never> };
  'job-dismiss': { args: { id: string }; result: Record<string, never> };
  'human-monitor-command': { args: { 'command-line': string }; result: string };
}

export type QmpCommandName = keyof QmpCommands;

export interface QmpConnectOptions {
  /** Time for the connection, the greeting and capabilities negotiation (default 5000). */
  timeoutMs?: number | undefined;
  /** Default timeout of each command (default 30000). */
  commandTimeoutMs?: number | undefined;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: LowtideError): void;
  timer: NodeJS.Timeout;
}

interface EventWaiter {
  name: string;
  filter: (data: Record<string, unknown>) => boolean;
  resolve(e: QmpEvent): void;
  reject(err: LowtideError): void;
  timer: NodeJS.Timeout;
}

/** Longest line accepted from the peer; anything longer is not QMP. */
const MAX_LINE_BYTES = 16 << 20;
/** Events kept for later waitForEvent() calls; the oldest are dropped beyond this. */
const MAX_QUEUED_EVENTS = 4096;

export class QmpClient {
  readonly path: string;
  /** The greeting's QEMU version, e.g. "7.2.19". */
  readonly version: string;
  readonly #socket: Socket;
  readonly #commandTimeoutMs: number;
  readonly #pending = new Map<string, Pending>();
  readonly #events: QmpEvent[] = [];
  readonly #waiters = new Set<EventWaiter>();
  #nextId = 1;
  #closed: LowtideError | undefined;

  private constructor(path: string, socket: Socket, version: string, commandTimeoutMs: number) {
    this.path = path;
    this.#socket = socket;
    this.version = version;
    this.#commandTimeoutMs = commandTimeoutMs;
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const commandTimeoutMs = options.commandTimeoutMs ?? 30000;
    const socket = createConnection({ path });
    let buffered = '';
    const greeting = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new LowtideError('PROTOCOL_ERROR', `${path}: no QMP greeting within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const fail = (err: LowtideError): void => {
        clearTimeout(timer);
        reject(err);
      };
      socket.once('error', (err: NodeJS.ErrnoException) => {
        const code = err.code === 'ENOENT' ? 'NOT_FOUND' : err.code === 'EACCES' ? 'PERMISSION_DENIED' : 'OPEN_FAILED';
        fail(new LowtideError(code, `${path}: cannot connect to QMP: ${err.message}`, { cause: err, path }));
      });
      socket.once('close', () => fail(new LowtideError('PROTOCOL_ERROR', `${path}: closed before a QMP greeting`)));
      socket.setEncoding('utf8');
      const onData = (chunk: string): void => {
        buffered += chunk;
        const nl = buffered.indexOf('\n');
        if (nl < 0) {
          if (buffered.length > MAX_LINE_BYTES) fail(new LowtideError('PROTOCOL_ERROR', `${path}: not a QMP socket`));
          return;
        }
        socket.off('data', onData);
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          fail(new LowtideError('PROTOCOL_ERROR', `${path}: not a QMP socket (the first line is not JSON)`));
          return;
        }
        const qmp = (msg as { QMP?: { version?: { qemu?: { major?: number; minor?: number; micro?: number } } } })?.QMP;
        if (qmp === undefined || typeof qmp !== 'object') {
          fail(new LowtideError('PROTOCOL_ERROR', `${path}: not a QMP socket (no QMP greeting)`));
          return;
        }
        clearTimeout(timer);
        const v = qmp.version?.qemu;
        resolve(v ? `${v.major}.${v.minor}.${v.micro}` : 'unknown');
      };
      socket.on('data', onData);
    });
    let version: string;
    try {
      version = await greeting;
    } catch (err) {
      socket.destroy();
      throw err;
    }
    socket.removeAllListeners('error');
    socket.removeAllListeners('close');
    const client = new QmpClient(path, socket, version, commandTimeoutMs);
    client.#attach(buffered);
    try {
      await client.execute('qmp_capabilities', {}, { timeoutMs });
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  #attach(initial: string): void {
    let buffered = '';
    const onText = (chunk: string): void => {
      buffered += chunk;
      for (;;) {
        const nl = buffered.indexOf('\n');
        if (nl < 0) break;
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line.length > 0) this.#onLine(line);
        if (this.#closed) return;
      }
      if (buffered.length > MAX_LINE_BYTES)
        this.#fail(new LowtideError('PROTOCOL_ERROR', `${this.path}: line too long`));
    };
    this.#socket.on('data', onText);
    this.#socket.on('error', (err) =>
      this.#fail(
        new LowtideError('PROTOCOL_ERROR', `${this.path}: QMP connection failed: ${err.message}`, { cause: err }),
      ),
    );
    this.#socket.on('close', () => this.#fail(new LowtideError('CLOSED', `${this.path}: QMP connection closed`)));
    if (initial.length > 0) onText(initial);
  }

  #onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#fail(new LowtideError('PROTOCOL_ERROR', `${this.path}: QMP sent a line that is not JSON`));
      return;
    }
    if (msg === null || typeof msg !== 'object') {
      this.#fail(new LowtideError('PROTOCOL_ERROR', `${this.path}: QMP sent a line that is not an object`));
      return;
    }
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp as { seconds?: number; microseconds?: number } | undefined;
      this.#onEvent({
        event: msg.event,
        data: (msg.data as Record<string, unknown> | undefined) ?? {},
        timestamp: (ts?.seconds ?? 0) + (ts?.microseconds ?? 0) / 1e6,
      });
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id === undefined ? undefined : this.#pending.get(id);
    if (!p) return; // a reply to a command that timed out already
    this.#pending.delete(id!);
    clearTimeout(p.timer);
    if ('return' in msg) p.resolve(msg.return);
    else if (msg.error && typeof msg.error === 'object') {
      const e = msg.error as { class?: string; desc?: string };
      const err = new LowtideError('QMP_ERROR', `${p.command}: ${e.class ?? 'Error'}: ${e.desc ?? 'no description'}`);
      Object.assign(err, { qmpClass: e.class });
      p.reject(err);
    } else p.reject(new LowtideError('PROTOCOL_ERROR', `${p.command}: a reply with neither return nor error`));
  }

  #onEvent(e: QmpEvent): void {
    for (const w of this.#waiters) {
      if (w.name === e.event && w.filter(e.data)) {
        this.#waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(e);
        return;
      }
    }
    this.#events.push(e);
    if (this.#events.length > MAX_QUEUED_EVENTS) this.#events.shift();
  }

  #fail(err: LowtideError): void {
    if (this.#closed) return;
    this.#closed = err;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new LowtideError(err.code, `${p.command}: ${err.message}`, { cause: err }));
    }
    this.#pending.clear();
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.reject(new LowtideError(err.code, `waiting for ${w.name}: ${err.message}`, { cause: err }));
    }
    this.#waiters.clear();
    this.#socket.destroy();
  }

  /** Runs one command; resolves with its typed result. */
  execute<K extends QmpCommandName>(
    command: K,
    args?: QmpCommands[K]['args'],
    options: { timeoutMs?: number | undefined } = {},
  ): Promise<QmpCommands[K]['result']> {
    if (this.#closed) return Promise.reject(new LowtideError('CLOSED', `${command}: ${this.#closed.message}`));
    const id = `lowtide-${this.#nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new LowtideError('TIMEOUT', `${command}: no QMP reply within ${timeoutMs} ms (${this.path})`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined && Object.keys(args).length > 0) msg.arguments = args;
      this.#socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /**
   * The first event named `name` whose data passes `filter`, including one
   * that arrived before this call (it is taken out of the queue).
   */
  waitForEvent(
    name: string,
    filter: (data: Record<string, unknown>) => boolean = () => true,
    timeoutMs = this.#commandTimeoutMs,
  ): Promise<QmpEvent> {
    const i = this.#events.findIndex((e) => e.event === name && filter(e.data));
    if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0]!);
    if (this.#closed) return Promise.reject(new LowtideError('CLOSED', `waiting for ${name}: ${this.#closed.message}`));
    return new Promise((resolve, reject) => {
      const w: EventWaiter = {
        name,
        filter,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(w);
          reject(new LowtideError('TIMEOUT', `no ${name} event within ${timeoutMs} ms (${this.path})`));
        }, timeoutMs),
      };
      this.#waiters.add(w);
    });
  }

  /** The queued events (not yet taken by waitForEvent), oldest first. */
  queuedEvents(): readonly QmpEvent[] {
    return [...this.#events];
  }

  close(): void {
    this.#fail(new LowtideError('CLOSED', `${this.path}: QMP connection closed by lowtide`));
  }
}
