/**
 * A typed client for the Cella HTTP API. Paths and methods come from the
 * same route table the server is built from (../api/routes.ts), and every
 * request and response type is the Static of its schema there, so the
 * client cannot drift from the contract.
 *
 *   const cella = CellaClient.fromEnv();
 *   const vm = await cella.runMicrovm({ imageIdentifier: 'demo' });
 *   await cella.waitForState(vm.microvmId, ['RUNNING']);
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { routes, type Operation, type Routes } from '../api/routes.js';
import {
  CONTRACT_MIN_IDLE_SECONDS,
  type AuthTokenResponse,
  type CreateAuthTokenRequest,
  type CreateShellAuthTokenRequest,
  type ErrorBody,
  type Image,
  type ListImagesResponse,
  type ListMicrovmsQuery,
  type ListMicrovmsResponse,
  type Microvm,
  type MicrovmSummary,
  type RegisterImageRequest,
  type RunMicrovmRequest,
  type Usage,
  type UsageReport,
  type VmState,
  type ServerInfo,
} from '../api/schemas.js';
import { CellaError, ERRORS, type ErrorCode } from '../errors/index.js';

export { CellaError, isCellaError, ERRORS, type ErrorCode } from '../errors/index.js';
export { AUTH_HEADER, VM_STATES } from '../api/schemas.js';
export type {
  AuthTokenResponse,
  CreateAuthTokenRequest,
  CreateShellAuthTokenRequest,
  HookSettings,
  IdlePolicy,
  Image,
  ListImagesResponse,
  ListMicrovmsQuery,
  ListMicrovmsResponse,
  Logging,
  Microvm,
  MicrovmSummary,
  PortSpecification,
  RegisterImageRequest,
  RunMicrovmRequest,
  Usage,
  UsageReport,
  VmState,
} from '../api/schemas.js';

export const DEFAULT_URL = 'http://127.0.0.1:7470';

export interface CellaClientOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:7470. */
  url: string;
  apiKey: string;
  /** Replaces the global fetch (tests, proxies, custom agents). */
  fetch?: typeof fetch;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Image states a build ends in. */
export const IMAGE_BUILD_DONE = ['CREATED', 'CREATE_FAILED'] as const;

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
const TABLE: Routes = routes(CONTRACT_MIN_IDLE_SECONDS);

type Body<K extends Operation> = Routes[K] extends { body: infer B extends TSchema } ? Static<B> : undefined;
type Query<K extends Operation> = Routes[K] extends { query: infer Q extends TSchema } ? Static<Q> : undefined;
type Output<K extends Operation> = Routes[K]['response'] extends infer R extends TSchema ? Static<R> : undefined;

interface Call<K extends Operation> {
  params?: Record<string, string>;
  body?: Body<K>;
  query?: Query<K>;
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

export class CellaClient {
  readonly url: string;
  private readonly apiKey: string;
  private readonly fetchFn: typeof fetch;

  constructor(opts: CellaClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.apiKey = opts.apiKey;
    this.fetchFn = opts.fetch ?? globalThis.fetch;
  }

  /** URL from CELLA_URL (default http://127.0.0.1:7470), key from CELLA_API_KEY. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): CellaClient {
    const apiKey = env.CELLA_API_KEY;
    if (!apiKey) throw new CellaError('UNAUTHENTICATED', 'CELLA_API_KEY is not set');
    return new CellaClient({ url: env.CELLA_URL || DEFAULT_URL, apiKey });
  }

  // MicroVMs

  runMicrovm(req: RunMicrovmRequest): Promise<Microvm> {
    return this.json('RunMicrovm', { body: req });
  }

  getMicrovm(id: string): Promise<Microvm> {
    return this.json('GetMicrovm', { params: { microvmIdentifier: id } });
  }

  listMicrovms(query: ListMicrovmsQuery = {}): Promise<ListMicrovmsResponse> {
    return this.json('ListMicrovms', { query });
  }

  /** Every MicroVM matching `query`, page after page (pages may be empty while a nextToken continues). */
  async *listAllMicrovms(query: Omit<ListMicrovmsQuery, 'nextToken'> = {}): AsyncGenerator<MicrovmSummary> {
    let nextToken: string | undefined;
    do {
      const page = await this.listMicrovms({ ...query, ...(nextToken ? { nextToken } : {}) });
      yield* page.items;
      nextToken = page.nextToken;
    } while (nextToken);
  }

  async suspendMicrovm(id: string): Promise<void> {
    await this.json('SuspendMicrovm', { params: { microvmIdentifier: id } });
  }

  /** Answers once the MicroVM runs again. */
  async resumeMicrovm(id: string): Promise<void> {
    await this.json('ResumeMicrovm', { params: { microvmIdentifier: id } });
  }

  /** Idempotent: terminating a TERMINATED MicroVM succeeds. */
  async terminateMicrovm(id: string): Promise<void> {
    await this.json('TerminateMicrovm', { params: { microvmIdentifier: id } });
  }

  createMicrovmAuthToken(id: string, req: CreateAuthTokenRequest): Promise<AuthTokenResponse> {
    return this.json('CreateMicrovmAuthToken', { params: { microvmIdentifier: id }, body: req });
  }

  createMicrovmShellAuthToken(id: string, req: CreateShellAuthTokenRequest): Promise<AuthTokenResponse> {
    return this.json('CreateMicrovmShellAuthToken', { params: { microvmIdentifier: id }, body: req });
  }

  getMicrovmUsage(id: string): Promise<Usage> {
    return this.json('GetMicrovmUsage', { params: { microvmIdentifier: id } });
  }

  getUsage(): Promise<UsageReport> {
    return this.json('GetUsage', {});
  }

  /** Where the endpoints are (domain, HTTPS port) and the CA that signs them. */
  getServerInfo(): Promise<ServerInfo> {
    return this.json('GetServerInfo', {});
  }

  /**
   * The app's stdout and stderr as raw chunks. With `follow` the stream
   * stays open until the MicroVM terminates. Aborting `signal` ends the
   * iteration quietly: stopping is what the caller asked for.
   */
  async *streamLogs(id: string, opts: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<Buffer> {
    let res: Response;
    try {
      res = await this.send('GetMicrovmLogs', {
        params: { microvmIdentifier: id },
        query: opts.follow ? { follow: true } : {},
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      if (opts.signal?.aborted) return;
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
      if (opts.signal?.aborted) return;
      throw new CellaConnectionError(this.url, err);
    } finally {
      reader.releaseLock();
      await res.body.cancel().catch(() => undefined);
    }
  }

  // Images (Cella extension)

  /** Starts the build in the background: the image comes back CREATING; see waitForImage. */
  registerImage(req: RegisterImageRequest): Promise<Image> {
    return this.json('RegisterImage', { body: req });
  }

  /** By name or image ARN. */
  getImage(name: string): Promise<Image> {
    return this.json('GetImage', { params: { imageIdentifier: name } });
  }

  listImages(): Promise<ListImagesResponse> {
    return this.json('ListImages', {});
  }

  /** Idempotent; refused (INVALID_STATE) while live MicroVMs use the image. */
  async deleteImage(name: string): Promise<void> {
    await this.json('DeleteImage', { params: { imageIdentifier: name } });
  }

  /** The image's build log. */
  async imageLogs(name: string): Promise<string> {
    return (await this.send('GetImageLogs', { params: { imageIdentifier: name }, query: {} })).text();
  }

  // Waiting

  /**
   * Polls GetMicrovm until the MicroVM is in one of `states`, or TERMINATED:
   * that state is final, so waiting longer could never succeed; callers
   * check `.state` (and `.stateReason`). Throws INVALID_STATE on timeout.
   */
  async waitForState(id: string, states: readonly VmState[], opts: WaitOptions = {}): Promise<Microvm> {
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    for (;;) {
      const vm = await this.getMicrovm(id);
      if (states.includes(vm.state) || vm.state === 'TERMINATED') return vm;
      if (Date.now() >= deadline) {
        throw new CellaError('INVALID_STATE', `MicroVM ${id} is still ${vm.state} after ${opts.timeoutMs ?? 120_000} ms (waited for ${states.join(' or ')})`, {
          details: { resourceId: id, resourceType: 'Microvm' },
        });
      }
      await sleep(opts.intervalMs ?? 250);
    }
  }

  /**
   * Polls GetImage until the build ends (CREATED or CREATE_FAILED; check
   * `.state`). `onPoll` sees every answer, for progress output. Throws
   * INVALID_STATE on timeout.
   */
  async waitForImage(name: string, opts: WaitOptions & { onPoll?: (image: Image) => void } = {}): Promise<Image> {
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const image = await this.getImage(name);
      opts.onPoll?.(image);
      if ((IMAGE_BUILD_DONE as readonly string[]).includes(image.state)) return image;
      if (Date.now() >= deadline) {
        throw new CellaError('INVALID_STATE', `image ${name} is still ${image.state} after ${timeoutMs} ms`, {
          details: { resourceId: name, resourceType: 'MicrovmImage' },
        });
      }
      await sleep(opts.intervalMs ?? 500);
    }
  }

  // Transport

  private async json<K extends Operation>(op: K, call: Call<K>): Promise<Output<K>> {
    const res = await this.send(op, call);
    if (TABLE[op].response === undefined) {
      await res.arrayBuffer();
      return undefined as Output<K>;
    }
    return (await res.json()) as Output<K>;
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
    for (const [k, v] of Object.entries((call.query ?? {}) as Record<string, unknown>)) {
      if (v !== undefined) search.set(k, String(v));
    }
    const qs = search.toString();
    const url = `${this.url}${path}${qs ? `?${qs}` : ''}`;
    const headers: Record<string, string> = { authorization: `Bearer ${this.apiKey}`, accept: route.response === 'text' ? 'text/plain' : 'application/json' };
    if (call.body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method: route.method,
        headers,
        ...(call.body !== undefined ? { body: JSON.stringify(call.body) } : {}),
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
