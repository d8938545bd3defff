/**
 * Client-side encryption of a repository (docs/repository-format.md,
 * "Encryption"): the key file that wraps the repository's master key under
 * a passphrase (scrypt), and the sealed objects (AES-256-GCM, in the addon's
 * worker pool) that chunks, manifests, indexes, catalogs and VM records are
 * stored as.
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt } from 'node:crypto';
import * as v from 'valibot';
import { LowtideError } from '../errors.js';
import { native } from '../native.js';
import { invalidOption } from '../options.js';
import { parseWith } from './schema.js';

/** The one cipher an encrypted repository uses. */
export const ENCRYPTION_ALGORITHM = 'aes-256-gcm';
/** Directory (key prefix) of the key files. */
export const KEYS_DIR = 'keys';
export const KEY_ID_PATTERN = /^[0-9a-f]{16}$/;
/** Bytes a sealed object adds to its plaintext: nonce (12) and tag (16). */
export const SEAL_OVERHEAD = 28;
const NONCE_SIZE = 12;
const TAG_SIZE = 16;

/** scrypt parameters of new key files: 32 MiB of memory, ~0.1-0.3 s. */
const SCRYPT_N = 1 << 15;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
/** Limits on what a key file may ask for (a damaged or hostile one must not exhaust memory). */
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;
/** Largest key file read. */
export const MAX_KEY_FILE_BYTES = 64 * 1024;

/** The master key: AES-256-GCM key of every object, HMAC-SHA256 key of chunk ids. */
export interface RepoKeys {
  /** The key file the passphrase opened (keys/<id>.json). */
  readonly keyId: string;
  readonly encryptionKey: Buffer;
  readonly macKey: Buffer;
}

const base64 = v.pipe(v.string(), v.base64());
const KeyFileSchema = v.object({
  format: v.literal('lowtide-key'),
  version: v.literal(1),
  id: v.pipe(v.string(), v.regex(KEY_ID_PATTERN, 'expected 16 lowercase hex characters')),
  created: v.string(),
  kdf: v.object({
    algorithm: v.literal('scrypt'),
    N: v.pipe(v.number(), v.integer(), v.minValue(1024), v.maxValue(1 << 22)),
    r: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(32)),
    p: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(16)),
    salt: base64,
  }),
  cipher: v.literal(ENCRYPTION_ALGORITHM),
  data: base64,
});
type KeyFile = v.InferOutput<typeof KeyFileSchema>;

/** The associated data of a wrapped master key: binds it to its repository and key file. */
function keyAad(repositoryId: string, keyId: string): Buffer {
  return Buffer.from(`lowtide-key:${repositoryId}:${keyId}`);
}

function derive(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, 32, { N, r, p, maxmem: 128 * N * r * (p + 1) + 1024 * 1024 }, (err, key) => {
      if (err) reject(new LowtideError('INTERNAL', `scrypt failed: ${err.message}`, { cause: err }));
      else resolve(key);
    });
  });
}

/** A `password` option: a non-empty string, else LOWTIDE_PASSWORD from the environment, else undefined. */
export function passwordOption(value: unknown, name = 'password'): string | undefined {
  if (value === undefined) {
    const env = process.env.LOWTIDE_PASSWORD;
    return env === undefined || env === '' ? undefined : env;
  }
  if (typeof value !== 'string' || value === '') invalidOption(name, 'a non-empty string', value);
  return value;
}

/** A new master key and its key file (JSON), wrapped under `password`. */
export async function createKey(password: string, repositoryId: string): Promise<{ keys: RepoKeys; file: Buffer }> {
  const keyId = randomBytes(8).toString('hex');
  const master = randomBytes(64);
  const salt = randomBytes(32);
  const wrapKey = await derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P);
  const nonce = randomBytes(NONCE_SIZE);
  const cipher = createCipheriv('aes-256-gcm', wrapKey, nonce);
  cipher.setAAD(keyAad(repositoryId, keyId));
  const sealed = Buffer.concat([nonce, cipher.update(master), cipher.final(), cipher.getAuthTag()]);
  const file: KeyFile = {
    format: 'lowtide-key',
    version: 1,
    id: keyId,
    created: new Date().toISOString(),
    kdf: { algorithm: 'scrypt', N: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P, salt: salt.toString('base64') },
    cipher: ENCRYPTION_ALGORITHM,
    data: sealed.toString('base64'),
  };
  return {
    keys: { keyId, encryptionKey: master.subarray(0, 32), macKey: master.subarray(32) },
    file: Buffer.from(JSON.stringify(file, null, 2) + '\n'),
  };
}

/**
 * The master key in a key file, or undefined when `password` does not open
 * it. A key file that is not one (or belongs to another repository's id,
 * which also fails to open) is REPO_CORRUPT.
 */
export async function openKey(
  data: Buffer,
  where: string,
  keyId: string,
  password: string,
  repositoryId: string,
): Promise<RepoKeys | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(data.toString('utf8'));
  } catch {
    throw new LowtideError('REPO_CORRUPT', `${where} is not valid JSON`, { path: where });
  }
  const k = parseWith(KeyFileSchema, raw, 'REPO_CORRUPT', `${where}: damaged key file`, where);
  if (k.id !== keyId)
    throw new LowtideError('REPO_CORRUPT', `${where}: damaged key file: id is ${k.id}`, { path: where });
  if (128 * k.kdf.N * k.kdf.r * k.kdf.p > MAX_SCRYPT_MEMORY)
    throw new LowtideError('REPO_CORRUPT', `${where}: damaged key file: its scrypt parameters need too much memory`, {
      path: where,
    });
  const sealed = Buffer.from(k.data, 'base64');
  if (sealed.length !== NONCE_SIZE + 64 + TAG_SIZE)
    throw new LowtideError('REPO_CORRUPT', `${where}: damaged key file: data has ${sealed.length} bytes`, {
      path: where,
    });
  const wrapKey = await derive(password, Buffer.from(k.kdf.salt, 'base64'), k.kdf.N, k.kdf.r, k.kdf.p);
  const decipher = createDecipheriv('aes-256-gcm', wrapKey, sealed.subarray(0, NONCE_SIZE));
  decipher.setAAD(keyAad(repositoryId, keyId));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  let master: Buffer;
  try {
    master = Buffer.concat([decipher.update(sealed.subarray(NONCE_SIZE, sealed.length - TAG_SIZE)), decipher.final()]);
  } catch {
    return undefined;
  }
  return { keyId, encryptionKey: master.subarray(0, 32), macKey: master.subarray(32) };
}

/** An object sealed with the repository's key: nonce | ciphertext | tag, its name authenticated with it. */
export function sealObject(keys: RepoKeys, name: string, plain: Uint8Array): Promise<Buffer> {
  return native.seal(plain, keys.encryptionKey, name);
}

/**
 * The plaintext of a sealed object (decrypted in place: a view into `sealed`).
 * An object that was altered, or moved from another name, fails with `code`
 * and a message naming `what`.
 */
export async function openObject(
  keys: RepoKeys,
  name: string,
  sealed: Buffer,
  code: 'REPO_CORRUPT' | 'CHUNK_CORRUPT',
  what: string,
  path: string,
): Promise<Buffer> {
  const n = await native.unseal(sealed, keys.encryptionKey, name);
  if (n === null)
    throw new LowtideError(
      code,
      `${what} (${path}) fails authentication: it was altered, damaged or written under another name or key`,
      { path },
    );
  return sealed.subarray(NONCE_SIZE, NONCE_SIZE + n);
}
