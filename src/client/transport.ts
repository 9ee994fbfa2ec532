/**
 * The client's transport: one operation of the route table in, one 2xx
 * response (as JSON or as raw chunks) out. A refused connection becomes a
 * CellaConnectionError, an API error the server's CellaError again.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { CellaError, CONTRACT_MIN_IDLE_SECONDS, type ErrorBody, type ErrorCode, ERRORS, type Operation, routes, type Routes } from '../contract/index.js';

/**
 * The server could not be reached (refused, unresolvable host, reset): no
 * API answer exists, so this is not a CellaError. `code` is the system
 * error code when there is one (ECONNREFUSED, ENOTFOUND, …).
 */
export class CellaConnectionError extends Error {
  readonly url: string;
  readonly code: string | undefined;

  constructor(url: string, cause: unknown) {
    const code = systemCode(cause);
    // fetch wraps the reason ("fetch failed"); the innermost cause says what went wrong.
    const reason = code ?? innermost(cause)?.message;
    super(`cannot reach the Cella server at ${url}${reason ? ` (${reason})` : ''}`, { cause });
    this.name = 'CellaConnectionError';
    this.url = url;
    this.code = code;
  }
}

// The minimum idle only changes what the server accepts, not paths or methods.
export const TABLE: Routes = routes(CONTRACT_MIN_IDLE_SECONDS);

export type Body<K extends Operation> = Routes[K] extends { body: infer B extends TSchema } ? Static<B> : undefined;
export type Query<K extends Operation> = Routes[K] extends { query: infer Q extends TSchema } ? Static<Q> : undefined;
export type Output<K extends Operation> = Routes[K]['response'] extends infer R extends TSchema ? Static<R> : undefined;

export interface Call<K extends Operation> {
  params?: Record<string, string>;
  body?: Body<K>;
  query?: Query<K>;
  /** The raw body of an upload operation, and its length (sent as content-length so an oversized upload is refused at once). */
  upload?: { data: Buffer | ReadableStream<Uint8Array>; size: number };
  signal?: AbortSignal;
}

/** Status → code for error bodies without a code this client knows (e.g. from a proxy in front). */
const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  402: 'QUOTA_EXCEEDED',
  403: 'ACCESS_DENIED',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  409: 'INVALID_STATE',
  413: 'PAYLOAD_TOO_LARGE',
  429: 'THROTTLED',
};

/** Sends operations of the route table to one server with one key. */
export class Transport {
  readonly url: string;
  private readonly apiKey: string;
  private readonly fetchFn: typeof fetch;

  constructor(url: string, apiKey: string, fetchFn: typeof fetch) {
    this.url = url;
    this.apiKey = apiKey;
    this.fetchFn = fetchFn;
  }

  async json<K extends Operation>(op: K, call: Call<K>): Promise<Output<K>> {
    const res = await this.send(op, call);
    if (TABLE[op].response === undefined) {
      await res.arrayBuffer();
      return undefined as Output<K>;
    }
    return (await res.json()) as Output<K>;
  }

  /** A text operation's body as raw chunks; aborting `signal` ends the iteration quietly. */
  async *stream<K extends 'GetMicrovmLogs' | 'GetMicrovmImageBuildLog'>(op: K, call: Call<K>, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
    let res: Response;
    try {
      res = await this.send(op, { ...call, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
    if (!res.body) return;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield Buffer.from(value);
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw new CellaConnectionError(this.url, err);
    } finally {
      reader.releaseLock();
      await res.body.cancel().catch(() => undefined);
    }
  }

  /** Sends one operation; resolves with a 2xx response, throws CellaError for an API error. */
  private async send<K extends Operation>(op: K, call: Call<K>): Promise<Response> {
    const route = TABLE[op];
    const path = route.path.replace(/\{(\w+)\}/g, (_, name: string) => {
      const value = call.params?.[name];
      if (value === undefined) throw new TypeError(`${op} needs ${name}`);
      return encodeURIComponent(value);
    });
    const search = new URLSearchParams();
    // Query fields are scalars (a schema with any other field fails to compile here); String() writes them as the server parses them.
    const query: Record<string, string | number | boolean | undefined> = call.query ?? {};
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined) search.set(k, String(v));
    }
    const qs = search.toString();
    const url = `${this.url}${path}${qs ? `?${qs}` : ''}`;
    const headers: Record<string, string> = { authorization: `Bearer ${this.apiKey}`, accept: route.response === 'text' ? 'text/plain' : 'application/json' };
    let body: BodyInit | undefined;
    if ('upload' in route && call.upload) {
      headers['content-type'] = route.upload.contentType;
      headers['content-length'] = String(call.upload.size);
      // A Buffer is a valid body; its type only admits a SharedArrayBuffer behind it, which fetch's type does not.
      body = call.upload.data as Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>;
    } else if (call.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(call.body);
    }
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method: route.method,
        headers,
        // A stream body goes out as it is read; fetch wants that said.
        ...(body !== undefined ? { body, ...(body instanceof ReadableStream ? { duplex: 'half' as const } : {}) } : {}),
        ...(call.signal ? { signal: call.signal } : {}),
      });
    } catch (err) {
      if (call.signal?.aborted) throw err;
      throw new CellaConnectionError(this.url, err);
    }
    if (!res.ok) throw await apiError(res);
    return res;
  }
}

/** Rebuilds the server's CellaError from an error response. */
async function apiError(res: Response): Promise<CellaError> {
  const text = await res.text().catch(() => '');
  let body: Partial<ErrorBody> & Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as typeof body;
  } catch {
    // Not JSON (e.g. a proxy's error page): the status and text still say what happened.
  }
  const known = typeof body.code === 'string' && Object.hasOwn(ERRORS, body.code);
  const code: ErrorCode = known ? (body.code as ErrorCode) : (CODE_BY_STATUS[res.status] ?? 'INTERNAL');
  const { message, code: _code, ...extra } = body;
  const details: Record<string, unknown> = { ...extra, httpStatus: res.status };
  if (!known && typeof body.code === 'string') details.serverCode = body.code;
  const msg = typeof message === 'string' && message ? message : text.trim().slice(0, 500) || `HTTP ${res.status} ${res.statusText}`;
  return new CellaError(code, msg, { details });
}

function systemCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  }
  return undefined;
}

function innermost(err: unknown): Error | undefined {
  let e = err instanceof Error ? err : undefined;
  for (let depth = 0; e?.cause instanceof Error && depth < 5; depth++) e = e.cause;
  return e;
}
