/**
 * S3 object storage (AWS S3, Ceph RADOS Gateway, MinIO, ...) through
 * @aws-sdk/client-s3, loaded when an s3:// repository is first opened.
 *
 * Every request is idempotent by construction (objects are immutable and
 * written with If-None-Match: *, deletes of a missing key succeed), so any
 * request that fails with a 5xx, a throttling answer, a timeout or a broken
 * connection is retried with exponential backoff and jitter until
 * `retryForMs` has passed. At most `requestsInFlight` requests run at once.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Readable } from 'node:stream';
import { LowtideError, toLowtideError } from '../../errors.js';
import { native } from '../../native.js';
import { booleanOption, integerOption, invalidOption, objectOption, stringOption } from '../../options.js';
import type { RemoteWrites } from '../../throttle/types.js';
import type { ObjectStorage, StoredObject } from './types.js';

export interface S3RepositoryOptions {
  /** `s3://bucket/prefix` (the prefix may be empty). */
  url: string;
  /** The S3 endpoint, e.g. `http://127.0.0.1:7480` (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS). */
  endpoint?: string | undefined;
  /** Default: AWS_REGION, AWS_DEFAULT_REGION, or us-east-1. */
  region?: string | undefined;
  /** Path-style requests (`endpoint/bucket/key`); default true when an endpoint is given. */
  forcePathStyle?: boolean | undefined;
  /** Credentials; default: the SDK's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws). */
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  /** A profile of ~/.aws/credentials and ~/.aws/config. */
  profile?: string | undefined;
  /** How long a failing request is retried before the error is reported (default 60000). */
  retryForMs?: number | undefined;
  /** Most requests in flight (default 16). */
  requestsInFlight?: number | undefined;
  /** Time a single request may take (default 60000). */
  requestTimeoutMs?: number | undefined;
  /**
   * Directory of the known-chunks index kept per repository (default:
   * LOWTIDE_CACHE_DIR, $XDG_CACHE_HOME/lowtide, or ~/.cache/lowtide).
   */
  cacheDir?: string | undefined;
}

const URL_PATTERN = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/;

/** True for a repository location that names S3 object storage. */
export function isS3Url(value: string): boolean {
  return value.startsWith('s3://');
}

/** bucket and prefix (without slashes at either end) of an s3:// URL. */
export function parseS3Url(url: string, name = 'repository'): { bucket: string; prefix: string } {
  const m = URL_PATTERN.exec(url);
  if (!m) invalidOption(name, 's3://bucket/prefix with a valid bucket name', url);
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '.' || p === '..')) invalidOption(name, 'a prefix without . or ..', url);
  return { bucket: m[1]!, prefix };
}

export function resolveS3Options(value: unknown, name = 'repository'): S3RepositoryOptions {
  const o = typeof value === 'string' ? { url: value } : objectOption(name, value);
  const urlName = typeof value === 'string' ? name : `${name}.url`;
  const url = stringOption(urlName, o.url);
  parseS3Url(url, urlName);
  const str = (k: string): string | undefined => (o[k] === undefined ? undefined : stringOption(`${name}.${k}`, o[k]));
  const endpoint = str('endpoint');
  if (endpoint !== undefined && !/^https?:\/\/[^/]+/.test(endpoint)) {
    invalidOption(`${name}.endpoint`, 'an http:// or https:// URL', endpoint);
  }
  return {
    url,
    endpoint,
    region: str('region'),
    forcePathStyle:
      o.forcePathStyle === undefined ? undefined : booleanOption(`${name}.forcePathStyle`, o.forcePathStyle, true),
    accessKeyId: str('accessKeyId'),
    secretAccessKey: str('secretAccessKey'),
    sessionToken: str('sessionToken'),
    profile: str('profile'),
    retryForMs: integerOption(`${name}.retryForMs`, o.retryForMs, 60_000, 0),
    requestsInFlight: integerOption(`${name}.requestsInFlight`, o.requestsInFlight, 16, 1, 1024),
    requestTimeoutMs: integerOption(`${name}.requestTimeoutMs`, o.requestTimeoutMs, 60_000, 100),
    cacheDir: str('cacheDir'),
  };
}

type Sdk = typeof import('@aws-sdk/client-s3');
let sdkPromise: Promise<Sdk> | undefined;
async function loadSdk(): Promise<Sdk> {
  sdkPromise ??= import('@aws-sdk/client-s3').catch((err: unknown) => {
    sdkPromise = undefined;
    throw new LowtideError('UNSUPPORTED', `s3:// repositories need the package @aws-sdk/client-s3: ${String(err)}`, {
      cause: err,
    });
  });
  return sdkPromise;
}

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);
const THROTTLING = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'TooManyRequests']);

function status(err: unknown): number | undefined {
  return (err as SdkError).$metadata?.httpStatusCode;
}

function retryable(err: unknown): boolean {
  const e = err as SdkError;
  const s = status(err);
  if (s !== undefined && (s >= 500 || s === 429 || s === 408)) return true;
  if (e.name !== undefined && (THROTTLING.has(e.name) || e.name === 'TimeoutError')) return true;
  if (e.code !== undefined && NETWORK_CODES.has(e.code)) return true;
  const cause = (err as { cause?: unknown }).cause;
  return cause !== undefined && cause !== err && retryable(cause);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A bounded window of requests: acquire() waits while `limit` are running. */
class Window {
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  constructor(readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#running >= this.limit) await new Promise<void>((r) => this.#waiting.push(r));
    else this.#running++;
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}

/** Whether `address` (an IP address) is a loopback address or one of this host's interfaces'. */
export function isOwnAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
  if (isIP(a) === 4 && a.startsWith('127.')) return true;
  if (a === '::1') return true;
  try {
    return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address.toLowerCase() === a));
  } catch {
    // The interfaces cannot be listed here: only loopback addresses are known to be this host's.
    return false;
  }
}

/** Whether every address `host` (a name or an IP address, IPv6 in brackets or not) resolves to is this host's. */
export async function isThisHost(host: string): Promise<boolean> {
  const h = host.replace(/^\[(.*)\]$/, '$1');
  if (isIP(h) !== 0) return isOwnAddress(h);
  try {
    const addresses = await lookup(h, { all: true });
    return addresses.length > 0 && addresses.every((a) => isOwnAddress(a.address));
  } catch {
    return false;
  }
}

/** The write requests of one storage, counted as they start and end. */
class WriteCounter implements RemoteWrites {
  bytesStarted = 0;
  requestsStarted = 0;
  bytesInFlight = 0;
  #onThisHost: Promise<boolean> | undefined;
  constructor(private readonly endpoint: () => string | undefined) {}

  onThisHost(): Promise<boolean> {
    this.#onThisHost ??= (async () => {
      const e = this.endpoint();
      if (e === undefined) return false;
      try {
        return await isThisHost(new URL(e).hostname);
      } catch {
        return false;
      }
    })();
    return this.#onThisHost;
  }

  async count<T>(bytes: number, request: () => Promise<T>): Promise<T> {
    this.bytesStarted += bytes;
    this.requestsStarted++;
    this.bytesInFlight += bytes;
    try {
      return await request();
    } finally {
      this.bytesInFlight -= bytes;
    }
  }
}

export class S3Storage implements ObjectStorage {
  readonly location: string;
  readonly cacheDir: string | undefined;
  /** Requests sent, by kind (retries not counted). */
  readonly requests = { get: 0, head: 0, put: 0, list: 0, delete: 0 };
  readonly writes: WriteCounter;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #options: S3RepositoryOptions;
  readonly #window: Window;
  #client: S3Client | undefined;
  #sdk: Sdk | undefined;

  constructor(options: S3RepositoryOptions) {
    const { bucket, prefix } = parseS3Url(options.url);
    this.#bucket = bucket;
    this.#prefix = prefix === '' ? '' : `${prefix}/`;
    this.#options = options;
    this.#window = new Window(options.requestsInFlight ?? 16);
    this.location = `s3://${bucket}/${prefix}`;
    this.cacheDir = options.cacheDir;
    this.writes = new WriteCounter(() => this.#endpoint());
  }

  #endpoint(): string | undefined {
    return this.#options.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  }

  async #open(): Promise<{ client: S3Client; sdk: Sdk }> {
    if (this.#client && this.#sdk) return { client: this.#client, sdk: this.#sdk };
    // The SDK warns on Node.js < 22 about its releases of 2027 on; lowtide
    // supports Node.js 20.19 with the SDK versions package.json allows. The
    // SDK reads this variable when the first client is made.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const sdk = await loadSdk();
    const o = this.#options;
    const endpoint = this.#endpoint();
    const credentials =
      o.accessKeyId !== undefined && o.secretAccessKey !== undefined
        ? {
            accessKeyId: o.accessKeyId,
            secretAccessKey: o.secretAccessKey,
            ...(o.sessionToken !== undefined ? { sessionToken: o.sessionToken } : {}),
          }
        : undefined;
    this.#client = new sdk.S3Client({
      region: o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      ...(endpoint !== undefined ? { endpoint } : {}),
      forcePathStyle: o.forcePathStyle ?? endpoint !== undefined,
      ...(credentials ? { credentials } : {}),
      ...(o.profile !== undefined ? { profile: o.profile } : {}),
      // Retries are ours (below), with a time budget instead of a count.
      maxAttempts: 1,
      // Ceph RGW refuses streamed bodies with the SDK's default trailing checksums.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { requestTimeout: o.requestTimeoutMs ?? 60_000, connectionTimeout: 5000 },
    });
    this.#sdk = sdk;
    return { client: this.#client, sdk };
  }

  #key(key: string): string {
    return this.#prefix + key;
  }

  /** One request, in the window, retried while it fails transiently; errors become LowtideErrors. */
  async #request<T>(what: string, fn: (client: S3Client, sdk: Sdk) => Promise<T>): Promise<T> {
    const { client, sdk } = await this.#open();
    const deadline = Date.now() + (this.#options.retryForMs ?? 60_000);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#window.run(() => fn(client, sdk));
      } catch (err) {
        if (!retryable(err) || Date.now() >= deadline) throw this.#error(err, what, attempt);
        const backoff = Math.min(100 * 2 ** attempt, 5000);
        await sleep(Math.min(backoff * (0.5 + Math.random() / 2), Math.max(0, deadline - Date.now())));
      }
    }
  }

  #error(err: unknown, what: string, retries: number): LowtideError {
    if (err instanceof LowtideError) return err;
    const e = err as SdkError;
    const s = status(err);
    const where = `${what} in ${this.location}`;
    const detail = `${e.name ?? 'error'}${s !== undefined ? ` (HTTP ${s})` : ''}: ${e.message ?? String(err)}`;
    if (e.name === 'NoSuchBucket') {
      return new LowtideError(
        'REPO_NOT_FOUND',
        `the bucket ${this.#bucket} does not exist (${where}); create it first, lowtide does not create buckets`,
        { cause: err },
      );
    }
    if (
      s === 403 ||
      e.name === 'InvalidAccessKeyId' ||
      e.name === 'SignatureDoesNotMatch' ||
      e.name === 'AccessDenied' ||
      e.name === 'CredentialsProviderError'
    ) {
      return new LowtideError('PERMISSION_DENIED', `S3 refused ${where}: check the credentials: ${detail}`, {
        cause: err,
      });
    }
    const tries = retries > 0 ? ` (after ${retries + 1} attempts)` : '';
    return toLowtideError(new Error(`${where} failed${tries}: ${detail}`, { cause: err }), 'IO_ERROR');
  }

  async check(): Promise<void> {
    await this.#request('checking the bucket', async (client, sdk) => {
      try {
        await client.send(new sdk.HeadBucketCommand({ Bucket: this.#bucket }));
      } catch (err) {
        // HEAD has no body: a 404 has no error code.
        if (status(err) === 404) {
          throw Object.assign(new Error(`no bucket ${this.#bucket}`), { name: 'NoSuchBucket' });
        }
        throw err;
      }
    });
  }

  async putIfAbsent(key: string, data: Buffer, options?: { verifiedOnRead?: boolean | undefined }): Promise<boolean> {
    this.requests.put++;
    const hash = options?.verifiedOnRead === true ? UNSIGNED_PAYLOAD : await payloadHash(data);
    return this.writes.count(data.length, () => this.#putIfAbsent(key, data, hash));
  }

  #putIfAbsent(key: string, data: Buffer, hash: string): Promise<boolean> {
    return this.#request(`writing ${key}`, async (client, sdk) => {
      try {
        await client.send(
          withPayloadHash(
            new sdk.PutObjectCommand({ Bucket: this.#bucket, Key: this.#key(key), Body: data, IfNoneMatch: '*' }),
            hash,
          ),
        );
        return true;
      } catch (err) {
        // 412: the object exists. 409 (ConditionalRequestConflict): another
        // writer of the same key is in progress; both write the same bytes.
        if (status(err) === 412 || status(err) === 409) return false;
        throw err;
      }
    });
  }

  async put(key: string, data: Buffer): Promise<void> {
    this.requests.put++;
    const hash = await payloadHash(data);
    await this.writes.count(data.length, () =>
      this.#request(`writing ${key}`, (client, sdk) =>
        client.send(
          withPayloadHash(new sdk.PutObjectCommand({ Bucket: this.#bucket, Key: this.#key(key), Body: data }), hash),
        ),
      ),
    );
  }

  async get(
    key: string,
    range?: { offset: number; length: number },
    maxBytes?: number,
    into?: (length: number) => Buffer,
  ): Promise<Buffer | undefined> {
    this.requests.get++;
    return this.#request(`reading ${key}`, async (client, sdk) => {
      let res;
      try {
        res = await client.send(
          new sdk.GetObjectCommand({
            Bucket: this.#bucket,
            Key: this.#key(key),
            ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
          }),
        );
      } catch (err) {
        if ((err as SdkError).name === 'NoSuchKey' || status(err) === 404) {
          if ((err as SdkError).name === 'NoSuchBucket') throw err;
          return undefined;
        }
        // A range past the object's end: nothing of it is there.
        if (range && (status(err) === 416 || (err as SdkError).name === 'InvalidRange')) return Buffer.alloc(0);
        throw err;
      }
      if (maxBytes !== undefined && (res.ContentLength ?? 0) > maxBytes) {
        res.Body?.transformToWebStream()
          .cancel()
          .catch(() => undefined);
        throw new LowtideError(
          'REPO_CORRUPT',
          `${key} in ${this.location} has ${res.ContentLength} bytes, more than the ${maxBytes} it may have`,
        );
      }
      if (!res.Body) return Buffer.alloc(0);
      const body = res.Body as unknown as Readable;
      const length = res.ContentLength;
      if (length !== undefined && typeof body.on === 'function') {
        return readBody(body, into ? into(length) : Buffer.allocUnsafeSlow(length), length);
      }
      const bytes = await res.Body.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    });
  }

  async head(key: string): Promise<StoredObject | undefined> {
    this.requests.head++;
    return this.#request(`checking ${key}`, async (client, sdk) => {
      try {
        const r = await client.send(new sdk.HeadObjectCommand({ Bucket: this.#bucket, Key: this.#key(key) }));
        return { key, size: r.ContentLength ?? 0, modified: r.LastModified ?? new Date(0) };
      } catch (err) {
        if (status(err) === 404) return undefined;
        throw err;
      }
    });
  }

  async *list(prefix: string): AsyncGenerator<StoredObject> {
    let token: string | undefined;
    do {
      this.requests.list++;
      const page = await this.#request(`listing ${prefix}`, (client, sdk) =>
        client.send(
          new sdk.ListObjectsV2Command({
            Bucket: this.#bucket,
            Prefix: this.#key(prefix),
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined || !o.Key.startsWith(this.#prefix)) continue;
        yield { key: o.Key.slice(this.#prefix.length), size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async delete(keys: readonly string[]): Promise<void> {
    this.requests.delete++;
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const res = await this.#request(`deleting ${batch.length} objects`, (client, sdk) =>
        client.send(
          new sdk.DeleteObjectsCommand({
            Bucket: this.#bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.#key(k) })), Quiet: true },
          }),
        ),
      );
      const failed = (res.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        throw new LowtideError(
          'WRITE_FAILED',
          `deleting ${failed[0]!.Key} in ${this.location} failed: ${failed[0]!.Code}: ${failed[0]!.Message}`,
        );
      }
    }
  }

  close(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }
}

/**
 * The payload "hash" of a request whose body is not signed (SigV4): neither
 * lowtide nor the gateway hashes it. Used for objects that are checked
 * whenever they are read (chunk records against their ids, authenticated
 * when encrypted), so a body altered on the way is found as at rest: by
 * verify, and a restore refuses it.
 */
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';

/**
 * The SHA-256 of a request body (hex), computed on the addon's worker pool
 * (OpenSSL, with the CPU's SHA instructions): SigV4 signs the payload's hash,
 * and the SDK would otherwise hash every body again on the JS thread.
 */
async function payloadHash(data: Buffer): Promise<string> {
  return (await native.digest(data, false))!.toString('hex');
}

type PutObject = InstanceType<Sdk['PutObjectCommand']>;

/** The command with its payload's hash set, which the signer then uses as it is. */
function withPayloadHash(command: PutObject, hash: string): PutObject {
  command.middlewareStack.add(
    (next) => (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] = hash;
      return next(args);
    },
    { step: 'build', priority: 'low', name: 'lowtidePayloadHash' },
  );
  return command;
}

/**
 * A response body of `length` bytes (its Content-Length) read into
 * `buffer`: each piece the socket delivers is copied once, into memory the
 * caller may reuse, instead of being collected and joined into a new buffer.
 * A body that ends early or runs long is a broken connection (retried).
 */
function readBody(body: Readable, buffer: Buffer, length: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let at = 0;
    const fail = (err: unknown): void => {
      body.off('data', onData);
      body.destroy();
      reject(err instanceof Error ? err : new Error(String(err)));
    };
    const broken = (what: string): Error =>
      Object.assign(new Error(`the response body ${what} (${at} of ${length} bytes)`), { code: 'ECONNRESET' });
    const onData = (piece: Buffer): void => {
      if (at + piece.length > length) return fail(broken('is longer than its Content-Length'));
      piece.copy(buffer, at);
      at += piece.length;
    };
    body.on('data', onData);
    body.once('error', fail);
    body.once('end', () => {
      if (at !== length) fail(broken('ended early'));
      else resolve(buffer.subarray(0, length));
    });
    body.once('close', () => {
      if (at !== length) fail(broken('ended early'));
    });
    if (buffer.length < length) fail(new Error(`a buffer of ${buffer.length} bytes for ${length}`));
  });
}

/** Keys per DeleteObjects request (the S3 maximum is 1000). */
const DELETE_BATCH = 1000;
