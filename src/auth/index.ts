/**
 * Who may call the API (API keys, SigV4 access keys) and who may reach a
 * VM's endpoint (tokens).
 *
 * API keys: one is generated at first start and shown once; only its SHA-256
 * is stored. `CELLA_API_KEY` in the server's environment is accepted too.
 * Access keys sign requests with SigV4, as the AWS SDK does: ./access-keys.ts
 * keeps them, ./sigv4.ts verifies the signatures.
 * Endpoint tokens: JWEs (dir + A256GCM, `jose`) under a key kept in the store,
 * bound to one VM, its allowed ports and an expiry; their ids are stored so a
 * terminated VM's tokens can be revoked.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { EncryptJWT, jwtDecrypt } from 'jose';
import type { IncomingHttpHeaders } from 'node:http';
import { CellaError, type PortSpecification } from '../contract/index.js';
import type { Store } from '../store/index.js';
import { isSigV4, type SigV4Verifier } from './sigv4.js';

export { AccessKeys, type AccessKeyInfo, type AccessKeyPair } from './access-keys.js';
export { MAX_SKEW_MS, SIGNING_SERVICE, SigV4Verifier, type SigV4Options } from './sigv4.js';

const KEY_PREFIX = 'cella_';

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Creates the first API key if there is none; returns it (to be shown once) or undefined. */
export async function ensureApiKey(store: Store): Promise<string | undefined> {
  if ((await store.apiKeyHashes()).length > 0) return undefined;
  const key = KEY_PREFIX + randomBytes(32).toString('base64url');
  await store.addApiKeyHash(sha256(key).toString('hex'));
  return key;
}

export class ApiKeys {
  private constructor(private readonly hashes: Buffer[]) {}

  /** The stored keys, and `envKey` besides them. */
  static async open(store: Store, envKey = process.env.CELLA_API_KEY): Promise<ApiKeys> {
    const hashes: Buffer[] = (await store.apiKeyHashes()).map((h) => Buffer.from(h, 'hex'));
    if (envKey) hashes.push(sha256(envKey));
    return new ApiKeys(hashes);
  }

  /** Checks an Authorization header; throws UNAUTHENTICATED unless it carries a known key. Returns who called (the key's hash). */
  check(authorization: string | undefined): string {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw new CellaError('UNAUTHENTICATED', 'missing credentials: send "Authorization: Bearer <key>", or sign the request with SigV4 (an access key)');
    const h = sha256(m[1] as string);
    // Compare against every key so the time taken does not tell which one matched.
    let ok = false;
    for (const k of this.hashes) ok = timingSafeEqual(k, h) || ok;
    if (!ok) throw new CellaError('UNAUTHENTICATED', 'the API key is not valid');
    return h.toString('hex');
  }
}

/** Who may call the API: a Bearer API key, or a request signed with SigV4 by an access key. */
export class Authenticator {
  constructor(
    private readonly apiKeys: ApiKeys,
    private readonly sigv4: SigV4Verifier,
  ) {}

  /**
   * Checks a request's credentials; returns who called (a key's hash, or
   * `sigv4:<access key id>`). A SigV4 signature covers the body, so the
   * caller reads it first (bounded) and passes it; `body` is undefined for an
   * upload, whose body is streamed afterwards: uploads take Bearer.
   */
  async check(req: { method: string; target: string; headers: IncomingHttpHeaders }, body: Buffer | undefined): Promise<string> {
    const authorization = req.headers.authorization;
    if (!isSigV4(authorization, req.target)) return this.apiKeys.check(authorization);
    if (body === undefined)
      throw new CellaError(
        'SIGNATURE_MALFORMED',
        'uploads take "Authorization: Bearer <key>"; with SigV4, give the code as an s3:// or file:// codeArtifact uri',
      );
    return `sigv4:${await this.sigv4.verify({ ...req, body })}`;
  }
}

export interface EndpointTokenClaims {
  jti: string;
  vmId: string;
  kind: 'http' | 'shell';
  ports: PortSpecification[];
  expiresAt: number;
}

export class TokenMinter {
  private constructor(private readonly key: Uint8Array) {}

  static async open(store: Store): Promise<TokenMinter> {
    // One transaction: two that open at once end with the same key, never one each.
    const key = await store.tx(async (tx) => {
      const kept = await tx.getSecret('endpoint-token-key');
      if (kept) return kept;
      const made = randomBytes(32);
      await tx.putSecret('endpoint-token-key', made);
      return made;
    });
    return new TokenMinter(new Uint8Array(key));
  }

  async mint(vmId: string, kind: 'http' | 'shell', ports: PortSpecification[], minutes: number): Promise<EndpointTokenClaims & { token: string }> {
    const jti = randomUUID();
    const expiresAt = Date.now() + minutes * 60_000;
    const token = await new EncryptJWT({ kind, ports })
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
      .setSubject(vmId)
      .setJti(jti)
      .setIssuedAt()
      .setExpirationTime(Math.floor(expiresAt / 1000))
      .encrypt(this.key);
    return { token, jti, vmId, kind, ports, expiresAt };
  }

  /** Decrypts and checks expiry; the caller checks the VM, the port and revocation. */
  async open(token: string): Promise<EndpointTokenClaims> {
    try {
      const { payload } = await jwtDecrypt(token, this.key);
      return {
        jti: String(payload.jti),
        vmId: String(payload.sub),
        kind: payload.kind === 'shell' ? 'shell' : 'http',
        ports: payload.ports as PortSpecification[],
        expiresAt: (payload.exp ?? 0) * 1000,
      };
    } catch (err) {
      throw new CellaError('ACCESS_DENIED', `invalid or expired token: ${(err as Error).message}`);
    }
  }
}
