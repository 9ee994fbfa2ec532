/**
 * SigV4 access keys: an id (`CELLA` + 16 base32 letters, like AWS's `AKIA...`)
 * and a secret. The first is made at the first start and shown once; more
 * with `cella keys create`; each is revocable.
 *
 * Why the secret is stored encrypted, not hashed: unlike a Bearer key, a
 * SigV4 secret never travels; the server recomputes the signature with it,
 * so it must be able to read it back. It is sealed with AES-256-GCM under a
 * key kept in the store's `secrets` table (as the endpoint token key is), with
 * the access key id as associated data, so a sealed secret only opens as its
 * own key's. This keeps secrets out of the database's rows, backups and
 * dumps of `access_keys` alone; whoever can read the whole database (both
 * tables) can recover them, as AWS itself can. Revoking deletes the row.
 *
 * A pair in `CELLA_ACCESS_KEY_ID` / `CELLA_SECRET_ACCESS_KEY` when the server
 * starts is accepted too; it lives in memory only, is not listed and cannot
 * be revoked (restart without it).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { CellaError } from '../contract/index.js';
import type { Store } from '../store/index.js';

const SEAL_KEY = 'access-key-seal-key';
const SEAL_VERSION = 1;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** What AWS accepts as an access key id. */
const ID_PATTERN = /^\w{16,128}$/;

export interface AccessKeyPair {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface AccessKeyInfo {
  accessKeyId: string;
  createdAt: number;
}

export class AccessKeys {
  private constructor(
    private readonly store: Store,
    private readonly sealKey: Buffer,
    private readonly env: AccessKeyPair | undefined,
    /** The key made at this start (the first one); shown once. */
    readonly created: AccessKeyPair | undefined,
  ) {}

  /**
   * Opens the keys of `store`; at the first start (no seal key yet) makes
   * the seal key and a first access key in one transaction, so a start that
   * fails halfway leaves neither.
   */
  static async open(store: Store, env?: Partial<AccessKeyPair>): Promise<AccessKeys> {
    const fromEnv = envPair(env);
    const { key, created } = await store.tx(async (tx) => {
      const kept = await tx.getSecret(SEAL_KEY);
      if (kept) return { key: kept, created: undefined };
      const made = randomBytes(32);
      await tx.putSecret(SEAL_KEY, made);
      const pair = newPair();
      await tx.putAccessKey({ id: pair.accessKeyId, sealedSecret: seal(made, pair), createdAt: Date.now() });
      return { key: made, created: pair };
    });
    return new AccessKeys(store, key, fromEnv, created);
  }

  async create(): Promise<AccessKeyPair & { createdAt: number }> {
    const pair = newPair();
    const createdAt = Date.now();
    await this.store.putAccessKey({ id: pair.accessKeyId, sealedSecret: seal(this.sealKey, pair), createdAt });
    return { ...pair, createdAt };
  }

  /** The stored keys, oldest first (the environment's pair is not listed). */
  async list(): Promise<AccessKeyInfo[]> {
    return (await this.store.listAccessKeys()).map((k) => ({ accessKeyId: k.id, createdAt: k.createdAt }));
  }

  /** From then on, requests signed with it are refused (UNKNOWN_ACCESS_KEY). */
  async revoke(accessKeyId: string): Promise<void> {
    if (this.env?.accessKeyId === accessKeyId) {
      throw new CellaError(
        'INVALID_ARGUMENT',
        `access key ${accessKeyId} comes from CELLA_ACCESS_KEY_ID in the server's environment: restart the server without it`,
      );
    }
    if (!(await this.store.deleteAccessKey(accessKeyId))) {
      throw new CellaError('NOT_FOUND', `access key ${accessKeyId} not found`, { details: { resourceId: accessKeyId, resourceType: 'AccessKey' } });
    }
  }

  /** The secret of a known key, for SigV4 verification; undefined if the id is unknown or revoked. */
  async secretOf(accessKeyId: string): Promise<string | undefined> {
    if (this.env?.accessKeyId === accessKeyId) return this.env.secretAccessKey;
    const rec = await this.store.getAccessKey(accessKeyId);
    return rec && unseal(this.sealKey, rec.id, rec.sealedSecret);
  }
}

function envPair(env: Partial<AccessKeyPair> | undefined): AccessKeyPair | undefined {
  const { accessKeyId, secretAccessKey } = env ?? {};
  if (!accessKeyId && !secretAccessKey) return undefined;
  if (!accessKeyId || !secretAccessKey)
    throw new CellaError('INVALID_ARGUMENT', 'CELLA_ACCESS_KEY_ID and CELLA_SECRET_ACCESS_KEY go together: set both or neither');
  if (!ID_PATTERN.test(accessKeyId)) throw new CellaError('INVALID_ARGUMENT', 'CELLA_ACCESS_KEY_ID must be 16 to 128 letters, digits or underscores');
  return { accessKeyId, secretAccessKey };
}

function newPair(): AccessKeyPair {
  const id = [...randomBytes(16)].map((b) => BASE32[b & 31]).join('');
  // 40 characters, like AWS's secrets.
  return { accessKeyId: `CELLA${id}`, secretAccessKey: randomBytes(30).toString('base64') };
}

/** version | iv (12) | tag (16) | ciphertext; the id is the associated data. */
function seal(key: Buffer, pair: AccessKeyPair): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv).setAAD(Buffer.from(pair.accessKeyId));
  const body = Buffer.concat([c.update(pair.secretAccessKey, 'utf8'), c.final()]);
  return Buffer.concat([Buffer.from([SEAL_VERSION]), iv, c.getAuthTag(), body]);
}

function unseal(key: Buffer, id: string, sealed: Buffer): string {
  if (sealed[0] !== SEAL_VERSION) throw new CellaError('INTERNAL', `access key ${id}: sealed secret of unknown version ${sealed[0]}`);
  try {
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(1, 13)).setAAD(Buffer.from(id));
    d.setAuthTag(sealed.subarray(13, 29));
    return Buffer.concat([d.update(sealed.subarray(29)), d.final()]).toString('utf8');
  } catch (err) {
    throw new CellaError('INTERNAL', `access key ${id}: its sealed secret does not open under the store's seal key`, { cause: err });
  }
}
