/**
 * Who may reach a sandbox's envd (envd's internal/api/auth.go): every call
 * needs the sandbox's X-Access-Token, except GET /health and /files, which
 * also take a signed URL (`sandbox.uploadUrl()/downloadUrl()`): `signature`
 * = v1_ + base64 sha256 of "path:op:user:token[:expiration]" with the
 * padding cut, and `signature_expiration` in unix seconds when it expires.
 * EnvdAccess (SandboxAccess of src/e2b/sandboxes.ts has this shape) is what
 * the proxy asks of a sandbox.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { SandboxDefaults } from './context.js';

/** The port the SDK addresses envd on: `49983-<id>.<domain>`. */
export const ENVD_PORT = 49983;
/**
 * The envd version advertised. 0.6.4 is the newest gate of SDK 2.51: file
 * metadata (0.6.2, `X-Metadata-*` as `user.e2b.*` xattrs), watch entries
 * (0.6.3) and allowNetworkMounts (0.6.4: a watch is inotify wherever the path is).
 */
export const ENVD_VERSION = '0.6.4';

export interface EnvdAccess {
  /** Whether `token` is sandbox `id`'s envdAccessToken (constant-time compare). */
  checkEnvdToken(id: string, token: string | undefined): Promise<boolean>;
  /** Sandbox `id`'s envdAccessToken, which signed /files URLs are made with; undefined when it is not an E2B sandbox. */
  envdToken(id: string): Promise<string | undefined>;
  /** The sandbox's default user and env vars (from create); undefined for a MicroVM that is not an E2B sandbox. */
  defaults(id: string): Promise<SandboxDefaults | undefined>;
  /** Whether a paused sandbox may be woken by traffic (autoResume.enabled). */
  autoResume(id: string): Promise<boolean>;
  /** The token that opens the sandbox's other ports when it was created with `allowPublicTraffic: false`; undefined when they are public. */
  trafficToken(id: string): Promise<string | undefined>;
}

/** The signature the SDK puts in a /files URL (src/sandbox/signature.ts of e2b). */
export function fileSignature(p: string, op: 'read' | 'write', user: string, token: string, expiration?: number): string {
  const raw = `${p}:${op}:${user}:${token}${expiration === undefined ? '' : `:${expiration}`}`;
  return `v1_${createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')}`;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Why a /files request's signature does not open it (undefined: it does).
 * An absent username is signed as '' (envd, the Python SDK) or, by the JS
 * SDK, as "undefined": both are taken.
 */
export function signatureProblem(method: string, url: URL, token: string, nowMs = Date.now()): string | undefined {
  const q = url.searchParams;
  const signature = q.get('signature');
  if (!signature) return 'missing X-Access-Token or signature';
  const op = method === 'GET' ? 'read' : method === 'POST' ? 'write' : undefined;
  if (!op) return `${method} /files is not allowed`;
  const rawExp = q.get('signature_expiration');
  let expiration: number | undefined;
  if (rawExp !== null) {
    if (!/^\d{1,12}$/.test(rawExp)) return 'signature_expiration: not a time in unix seconds';
    expiration = Number(rawExp);
    if (expiration * 1000 < nowMs) return 'the signature has expired';
  }
  const p = q.get('path') ?? '';
  const user = q.get('username');
  const users = user === null ? ['', 'undefined'] : [user];
  return users.some((u) => same(signature, fileSignature(p, op, u, token, expiration))) ? undefined : 'invalid signature';
}

/** Whether the request may reach envd: undefined, or the 401 message. */
export async function envdAuthProblem(
  access: Pick<EnvdAccess, 'checkEnvdToken' | 'envdToken'>,
  id: string,
  method: string,
  rawUrl: string,
  headerToken: string | undefined,
): Promise<string | undefined> {
  const url = new URL(rawUrl, 'http://envd');
  if (url.pathname === '/health' && method === 'GET') return undefined;
  if (headerToken !== undefined) return (await access.checkEnvdToken(id, headerToken)) ? undefined : 'invalid X-Access-Token';
  if (url.pathname !== '/files') return 'missing X-Access-Token';
  const token = await access.envdToken(id);
  return token === undefined ? 'no such sandbox' : signatureProblem(method, url, token);
}
