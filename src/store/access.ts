/**
 * Who may do what, and what was already done: endpoint tokens, API key
 * hashes, SigV4 access keys, secrets (key material, settings that must
 * outlive restarts) and the idempotency records of requests that carried a
 * clientToken.
 */
import { blob, int, text, type Table } from './columns.js';

export interface TokenRecord {
  jti: string;
  vmId: string;
  kind: 'http' | 'shell';
  ports: string;
  expiresAt: number;
  createdAt: number;
}

/** Which resource a request with a clientToken made, and a hash of the request's other parameters. */
export interface IdempotencyRecord {
  scope: string;
  clientToken: string;
  hash: string;
  resourceId: string;
  createdAt: number;
}

export interface ApiKeyRecord {
  hash: string;
  createdAt: number;
}

/**
 * A SigV4 access key. Verifying a signature needs the secret itself (not a
 * hash), so `sealedSecret` is the secret encrypted by src/auth under a key
 * kept in `secrets`; the store never sees it in the clear.
 */
export interface AccessKeyRecord {
  id: string;
  sealedSecret: Buffer;
  createdAt: number;
}

export interface SecretRecord {
  name: string;
  value: Buffer;
}

export const TOKENS: Table<TokenRecord> = {
  name: 'tokens',
  key: ['jti'],
  columns: {
    jti: text('jti'),
    vmId: text('vm_id'),
    kind: text('kind'),
    ports: text('ports'),
    expiresAt: int('expires_at'),
    createdAt: int('created_at'),
  },
};

export const IDEMPOTENCY: Table<IdempotencyRecord> = {
  name: 'idempotency',
  key: ['scope', 'clientToken'],
  columns: {
    scope: text('scope'),
    clientToken: text('client_token'),
    hash: text('hash'),
    resourceId: text('resource_id'),
    createdAt: int('created_at'),
  },
};

export const API_KEYS: Table<ApiKeyRecord> = {
  name: 'api_keys',
  key: ['hash'],
  columns: { hash: text('hash'), createdAt: int('created_at') },
};

export const ACCESS_KEYS: Table<AccessKeyRecord> = {
  name: 'access_keys',
  key: ['id'],
  columns: { id: text('id'), sealedSecret: blob('sealed_secret'), createdAt: int('created_at') },
};

export const SECRETS: Table<SecretRecord> = {
  name: 'secrets',
  key: ['name'],
  mutable: ['value'],
  columns: { name: text('name'), value: blob('value') },
};
