/**
 * A client of the QEMU guest agent (qemu-ga) through the host side of its
 * virtio-serial channel, a unix socket. The agent speaks JSON lines like QMP
 * but sends no greeting, and the channel may hold stale bytes from an
 * earlier client: connect() synchronizes with `guest-sync-delimited` (the
 * reply follows a 0xFF byte; everything before it is discarded). Commands
 * run one at a time, each with a timeout; after a timeout the client is not
 * used again (a late reply could be taken for the next one's).
 */
import { createConnection, type Socket } from 'node:net';
import { LowtideError } from '../errors.js';

export interface GuestAgentCommands {
  'guest-sync-delimited': { args: { id: number }; result: number };
  'guest-ping': { args: Record<string, never>; result: Record<string, never> };
  'guest-fsfreeze-freeze': { args: Record<string, never>; result: number };
  'guest-fsfreeze-thaw': { args: Record<string, never>; result: number };
  'guest-fsfreeze-status': { args: Record<string, never>; result: 'thawed' | 'frozen' };
}

const MAX_LINE_BYTES = 1 << 20;

export class GuestAgentClient {
  readonly path: string;
  readonly #socket: Socket;
  #buffer = Buffer.alloc(0);
  #synced = false;
  #waiting: { resolve(msg: Record<string, unknown>): void; reject(err: LowtideError): void } | undefined;
  #broken: LowtideError | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, socket: Socket) {
    this.path = path;
    this.#socket = socket;
    socket.on('data', (b: Buffer) => this.#onData(b));
    socket.on('error', (err) =>
      this.#fail(new LowtideError('PROTOCOL_ERROR', `${path}: guest agent connection failed: ${err.message}`)),
    );
    socket.on('close', () => this.#fail(new LowtideError('CLOSED', `${path}: guest agent connection closed`)));
  }

  /** Connects and synchronizes; TIMEOUT when the agent does not answer within `timeoutMs`. */
  static async connect(path: string, options: { timeoutMs?: number | undefined } = {}): Promise<GuestAgentClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const socket = createConnection({ path });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new LowtideError(
            err.code === 'ENOENT' ? 'NOT_FOUND' : 'OPEN_FAILED',
            `${path}: cannot connect to the guest agent: ${err.message}`,
            { cause: err, path },
          ),
        ),
      );
    });
    socket.removeAllListeners('error');
    const client = new GuestAgentClient(path, socket);
    try {
      const id = Math.floor(Math.random() * 2 ** 31);
      const got = await client.execute('guest-sync-delimited', { id }, { timeoutMs });
      if (got !== id) throw new LowtideError('PROTOCOL_ERROR', `${path}: guest-sync answered ${got}, not ${id}`);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  #onData(b: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, b]);
    if (!this.#synced) {
      const ff = this.#buffer.indexOf(0xff);
      if (ff < 0) {
        this.#buffer = Buffer.alloc(0);
        return;
      }
      this.#buffer = this.#buffer.subarray(ff + 1);
      this.#synced = true;
    }
    for (;;) {
      const nl = this.#buffer.indexOf(0x0a);
      if (nl < 0) break;
      const line = this.#buffer.subarray(0, nl).toString('utf8').trim();
      this.#buffer = this.#buffer.subarray(nl + 1);
      if (line === '') continue;
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch {
        this.#fail(new LowtideError('PROTOCOL_ERROR', `${this.path}: the guest agent sent a line that is not JSON`));
        return;
      }
      const w = this.#waiting;
      this.#waiting = undefined;
      if (w && msg !== null && typeof msg === 'object') w.resolve(msg as Record<string, unknown>);
    }
    if (this.#buffer.length > MAX_LINE_BYTES)
      this.#fail(new LowtideError('PROTOCOL_ERROR', `${this.path}: the guest agent sent a line too long`));
  }

  #fail(err: LowtideError): void {
    if (this.#broken) return;
    this.#broken = err;
    this.#waiting?.reject(err);
    this.#waiting = undefined;
    this.#socket.destroy();
  }

  /** Runs one command (after the ones before it) with a timeout (default 5000 ms). */
  execute<K extends keyof GuestAgentCommands>(
    command: K,
    args?: GuestAgentCommands[K]['args'],
    options: { timeoutMs?: number | undefined } = {},
  ): Promise<GuestAgentCommands[K]['result']> {
    const run = async (): Promise<GuestAgentCommands[K]['result']> => {
      if (this.#broken) throw new LowtideError(this.#broken.code, `${command}: ${this.#broken.message}`);
      const timeoutMs = options.timeoutMs ?? 5000;
      if (command === 'guest-sync-delimited') this.#synced = false;
      const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => {
          const err = new LowtideError('TIMEOUT', `${command}: the guest agent did not answer within ${timeoutMs} ms`);
          this.#fail(err);
          reject(err);
        }, timeoutMs);
        this.#waiting = {
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        const msg: Record<string, unknown> = { execute: command };
        if (args !== undefined && Object.keys(args).length > 0) msg.arguments = args;
        // guest-sync-delimited is preceded by 0xFF so the agent resets its parser.
        const prefix = command === 'guest-sync-delimited' ? Buffer.from([0xff]) : Buffer.alloc(0);
        this.#socket.write(Buffer.concat([prefix, Buffer.from(`${JSON.stringify(msg)}\n`)]));
      });
      if ('return' in reply) return reply.return as GuestAgentCommands[K]['result'];
      const e = (reply.error ?? {}) as { class?: string; desc?: string };
      throw new LowtideError('QMP_ERROR', `${command}: ${e.class ?? 'Error'}: ${e.desc ?? 'no description'}`);
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  close(): void {
    this.#fail(new LowtideError('CLOSED', `${this.path}: guest agent connection closed by lowtide`));
  }
}
