/**
 * A client for one repository of an OCI distribution registry: picks the
 * scheme, answers Bearer and Basic auth challenges, and fetches manifests and
 * blobs, verifying each against its sha256 digest.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { BuildFailure } from '../contract/index.js';
import { formatReference, type ImageReference } from './reference.js';

export interface Credentials {
  username: string;
  password: string;
}

export interface RegistryOptions {
  /** `host:port` of registries that may be reached over plain http; loopback ones always may. */
  insecureRegistries?: string[];
  credentials?: Credentials;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

const MANIFEST_LIMIT = 4 << 20;
const REQUEST_TIMEOUT_MS = 30_000;

function isLoopback(registry: string): boolean {
  const host = registry.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `Bearer realm="…",service="…"` → scheme and parameters. */
function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  const params: Record<string, string> = {};
  for (const p of (m?.[2] ?? '').matchAll(/(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))/g)) params[p[1]!.toLowerCase()] = p[2] ?? p[3] ?? '';
  return { scheme: (m?.[1] ?? '').toLowerCase(), params };
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

export class RegistryClient {
  private origin: string | undefined;
  private authorization: string | undefined;
  private readonly name: string;

  constructor(
    private readonly ref: ImageReference,
    private readonly opts: RegistryOptions,
  ) {
    this.name = formatReference(ref);
  }

  private fail(message: string, cause?: unknown): BuildFailure {
    const err = new BuildFailure('CONTAINER_BUILD_FAILED', `pulling ${this.name}: ${message}`);
    if (cause !== undefined) err.cause = cause;
    return err;
  }

  /** https, unless it cannot be reached and plain http is allowed for this registry (as Docker does). */
  private async base(): Promise<string> {
    if (this.origin) return this.origin;
    const host = this.ref.registry;
    try {
      const res = await fetch(`https://${host}/v2/`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      await res.body?.cancel();
      this.origin = `https://${host}`;
    } catch (err) {
      if (!isLoopback(host) && !this.opts.insecureRegistries?.includes(host)) {
        throw this.fail(`cannot reach https://${host}/v2/: ${fetchFailure(err)}`, err);
      }
      this.origin = `http://${host}`;
    }
    return this.origin;
  }

  private async send(path: string, accept: string[], timeout: boolean): Promise<Response> {
    const url = `${await this.base()}/v2/${this.ref.repository}/${path}`;
    const headers: Record<string, string> = { accept: accept.join(', ') };
    if (this.authorization) headers.authorization = this.authorization;
    try {
      return await fetch(url, { headers, ...(timeout && { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }) });
    } catch (err) {
      throw this.fail(`GET ${url}: ${fetchFailure(err)}`, err);
    }
  }

  /** GET with one retry after answering an auth challenge; any status but 200 is a failure naming it. */
  private async get(path: string, accept: string[], what: string, timeout = true): Promise<Response> {
    let res = await this.send(path, accept, timeout);
    if (res.status === 401) {
      const challenge = res.headers.get('www-authenticate');
      await res.body?.cancel();
      if (challenge && (await this.authenticate(challenge))) res = await this.send(path, accept, timeout);
    }
    if (res.status !== 200) {
      let detail = '';
      try {
        const body = (await res.json()) as { errors?: { code?: string; message?: string }[] };
        detail = (body.errors ?? []).map((e) => ` (${e.code}: ${e.message})`).join('');
      } catch {
        // Not a registry error body; the status says enough.
      }
      const why = res.status === 401 ? 'unauthorized' : res.status === 404 ? 'not found' : res.statusText;
      throw this.fail(`${what}: HTTP ${res.status} ${why}${detail}`);
    }
    return res;
  }

  /** Sets the Authorization header a challenge asks for; false when there is nothing to answer it with. */
  private async authenticate(header: string): Promise<boolean> {
    const { scheme, params } = parseChallenge(header);
    const creds = this.opts.credentials;
    const basic = creds && `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    if (scheme === 'basic') {
      if (!basic || this.authorization === basic) return false;
      this.authorization = basic;
      return true;
    }
    if (scheme !== 'bearer' || !params.realm) return false;
    const url = new URL(params.realm);
    if (params.service) url.searchParams.set('service', params.service);
    url.searchParams.set('scope', params.scope ?? `repository:${this.ref.repository}:pull`);
    let res: Response;
    try {
      res = await fetch(url, { headers: basic ? { authorization: basic } : {}, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    } catch (err) {
      throw this.fail(`token request to ${url.origin}${url.pathname}: ${fetchFailure(err)}`, err);
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw this.fail(`token request to ${url.origin}${url.pathname}: HTTP ${res.status}${basic ? '' : ' (no credentials given)'}`);
    }
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw this.fail(`token response from ${url.origin}${url.pathname} carries no token`);
    this.authorization = `Bearer ${token}`;
    return true;
  }

  /** A manifest (or index) by tag or digest: its bytes, media type and digest. */
  async manifest(reference: string, accept: string[]): Promise<{ body: Buffer; mediaType: string; digest: string }> {
    const res = await this.get(`manifests/${reference}`, accept, `manifest ${reference}`);
    const body = await this.readAll(res, MANIFEST_LIMIT, `manifest ${reference}`);
    const digest = sha256(body);
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw this.fail(`manifest ${reference} does not match its digest (got ${digest})`);
    }
    return { body, mediaType: (res.headers.get('content-type') ?? '').split(';')[0]!.trim(), digest };
  }

  /** A small blob (the image config), verified. */
  async blob(desc: Descriptor): Promise<Buffer> {
    const res = await this.get(`blobs/${desc.digest}`, ['*/*'], `blob ${desc.digest}`);
    const body = await this.readAll(res, desc.size, `blob ${desc.digest}`);
    if (body.length !== desc.size || sha256(body) !== desc.digest) throw this.fail(`blob ${desc.digest} does not match its digest`);
    return body;
  }

  /** Streams a blob into `file` (via a temporary name), keeping it only if its size and digest match. */
  async download(desc: Descriptor, file: string): Promise<void> {
    const what = `blob ${desc.digest}`;
    const res = await this.get(`blobs/${desc.digest}`, ['*/*'], what, false);
    const hash = createHash('sha256');
    let size = 0;
    const check = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        size += chunk.length;
        if (size > desc.size) return done(this.fail(`${what} is larger than the ${desc.size} bytes the manifest says`));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    const tmp = `${file}.${randomBytes(6).toString('hex')}.part`;
    try {
      await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), check, createWriteStream(tmp, { mode: 0o600 }));
      if (size !== desc.size || `sha256:${hash.digest('hex')}` !== desc.digest) throw this.fail(`${what} does not match its digest`);
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      if (err instanceof BuildFailure) throw err;
      throw this.fail(`${what}: ${(err as Error).message}`, err);
    }
  }

  private async readAll(res: Response, limit: number, what: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      // Throwing out of the loop cancels the body.
      if (size > limit) throw this.fail(`${what} is larger than ${limit} bytes`);
      chunks.push(Buffer.from(chunk));
    }
    return Buffer.concat(chunks);
  }
}

/** Why fetch() failed: "fetch failed" keeps the reason (refused, DNS, TLS) in its cause, a timeout in its own message. */
function fetchFailure(err: unknown): string {
  const { cause, message } = err as Error;
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : message;
}
