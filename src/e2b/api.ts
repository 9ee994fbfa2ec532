/**
 * The E2B REST facade, under `/e2b` on the API port: the calls the `e2b`
 * SDK makes of `E2B_API_URL` (../shared/reference/e2b-compat.md §2), each
 * turned into one call on Sandboxes. Authenticated with a Cella API key in
 * `X-API-Key`. Errors are E2B's bodies, `{code: <HTTP status>, message}`:
 * the SDK reads `code` from the body, and maps 401, 429 and 503 to its own
 * error classes. What E2B offers and Cella does not is 501.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { Static, TSchema } from '@sinclair/typebox';
import type { ApiKeys } from '../auth/index.js';
import { CellaError, fromErrno, isCellaError } from '../contract/index.js';
import { parseJson, readBody, sendJson, validate } from '../http/index.js';
import { TokenBuckets } from '../limits/index.js';
import { ENVD_VERSION } from './envd/index.js';
import { DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, type Sandbox, type SandboxState, type Sandboxes } from './sandboxes.js';
import {
  ConnectBody,
  ConnectBodyV1,
  type ListedSandboxView,
  type MetricView,
  NewSandboxBody,
  PauseBody,
  type SandboxDetailView,
  type SandboxView,
  TimeoutBody,
} from './schemas.js';

export const E2B_PREFIX = '/e2b';
/** E2B's `clientID`: the SDK requires one and reads nothing from it. */
const CLIENT_ID = 'cella';
const MAX_BODY_BYTES = 256 * 1024;
const MAX_LIST_LIMIT = 100;

export interface E2bApiOptions {
  sandboxes: Sandboxes;
  keys: Pick<ApiKeys, 'check'>;
  /** What the SDK builds envd's hosts from: `<domain>[:<proxy port>]`. */
  domain: string;
  /** Requests per second per API key (0: no limit). */
  ratePerSecond?: number;
}

/** Whether a request's path is the facade's. */
export function isE2bPath(url: string | undefined): boolean {
  return url === E2B_PREFIX || (url ?? '').startsWith(`${E2B_PREFIX}/`);
}

type Reply = { status: 200 | 201; json: unknown; headers?: Record<string, string> } | { status: 204 };

interface Call {
  params: string[];
  query: URLSearchParams;
  raw: Buffer;
}

interface Route {
  method: string;
  pattern: RegExp;
  handle: (c: Call) => Promise<Reply>;
}

export function createE2bApi(opts: E2bApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { sandboxes } = opts;
  const buckets = new TokenBuckets();
  const rate = opts.ratePerSecond ?? 0;
  const ID = '([^/]+)';
  const route = (method: string, path: string, handle: (c: Call) => Promise<Reply>): Route => ({
    method,
    pattern: new RegExp(`^${path.replace(/\{id\}/g, ID)}$`),
    handle,
  });
  const notImplemented = (method: string, path: string, what: string): Route =>
    route(method, path, async () => {
      throw new CellaError('NOT_IMPLEMENTED', `${what} is not implemented by Cella's E2B API`);
    });

  const create =
    (schema: typeof NewSandboxBody) =>
    async (c: Call): Promise<Reply> => {
      const b = body(c, schema);
      refuseUnsupported(b);
      const timeoutSeconds = timeoutOf(b.timeout ?? DEFAULT_TIMEOUT_SECONDS);
      const autoPause = b.autoPause ?? false;
      if (b.autoResume?.enabled && !autoPause)
        throw new CellaError('INVALID_ARGUMENT', 'autoResume needs autoPause: a sandbox killed at its timeout cannot be resumed');
      const sbx = await sandboxes.create({
        templateID: b.templateID ?? 'base',
        timeoutSeconds,
        metadata: b.metadata ?? {},
        envVars: b.envVars ?? {},
        autoPause,
        autoResume: b.autoResume?.enabled ?? false,
        ...(b.allow_internet_access !== undefined ? { allowInternetAccess: b.allow_internet_access } : {}),
        ...(b.network?.allowPublicTraffic === false ? { allowPublicTraffic: false } : {}),
      });
      return { status: 201, json: sandboxView(sbx) };
    };

  const connect =
    (schema: typeof ConnectBody | typeof ConnectBodyV1) =>
    async (c: Call): Promise<Reply> => {
      const b = body(c, schema);
      if (b.memory === false) throw new CellaError('NOT_IMPLEMENTED', "resuming with a fresh boot (onResume: 'reboot') is not implemented by Cella's E2B API");
      const { sandbox, resumed } = await sandboxes.connect(idOf(c), timeoutOf(b.timeout ?? DEFAULT_TIMEOUT_SECONDS));
      return { status: resumed ? 201 : 200, json: sandboxView(sandbox) };
    };

  const list = async (c: Call): Promise<Reply> => {
    const q = listQuery(c.query);
    const all = (await sandboxes.list()).filter(
      (s) =>
        q.states.includes(s.state) &&
        (q.template === undefined || s.e2b.templateId === q.template) &&
        (q.startedAfter === undefined || s.vm.createdAt > q.startedAfter) &&
        Object.entries(q.metadata).every(([k, v]) => s.e2b.metadata[k] === v),
    );
    const ordered = q.order === 'asc' ? all : all.reverse();
    const after = q.after;
    return page(after === undefined ? ordered : ordered.filter((s) => (q.order === 'asc' ? positionOf(s) > after : positionOf(s) < after)), q.limit);
  };

  const routes: Route[] = [
    route('POST', '/v2/sandboxes', create(NewSandboxBody)),
    route('POST', '/sandboxes', create(NewSandboxBody)),
    route('GET', '/v2/sandboxes', list),
    route('GET', '/sandboxes', list),
    route('GET', '/sandboxes/{id}', async (c) => ({ status: 200, json: detailView(await sandboxes.require(idOf(c))) })),
    route('DELETE', '/sandboxes/{id}', async (c) => {
      await sandboxes.kill(idOf(c));
      return { status: 204 };
    }),
    route('POST', '/v2/sandboxes/{id}/connect', connect(ConnectBody)),
    route('POST', '/sandboxes/{id}/connect', connect(ConnectBodyV1)),
    route('POST', '/sandboxes/{id}/resume', connect(ConnectBody)),
    route('POST', '/sandboxes/{id}/timeout', async (c) => {
      await sandboxes.setTimeout(idOf(c), timeoutOf(body(c, TimeoutBody).timeout));
      return { status: 204 };
    }),
    route('POST', '/sandboxes/{id}/pause', async (c) => {
      body(c, PauseBody);
      await sandboxes.pause(idOf(c));
      return { status: 204 };
    }),
    route('GET', '/sandboxes/{id}/metrics', async (c) => {
      const start = unixSeconds(c.query, 'start');
      const end = unixSeconds(c.query, 'end');
      const samples = (await sandboxes.metrics(idOf(c))).filter(
        (m) => (start === undefined || m.at >= start * 1000 - 999) && (end === undefined || m.at <= end * 1000 + 999),
      );
      const json: MetricView[] = samples.map(({ at, ...m }) => ({ timestamp: new Date(at).toISOString(), timestampUnix: Math.floor(at / 1000), ...m }));
      return { status: 200, json };
    }),
    notImplemented('PUT', '/sandboxes/{id}/network', 'updating the network of a sandbox'),
    notImplemented('POST', '/sandboxes/{id}/snapshots', 'snapshots'),
    notImplemented('GET', '/snapshots', 'snapshots'),
    notImplemented('POST', '/sandboxes/{id}/fork', 'forking a sandbox'),
    notImplemented('GET', '/sandboxes/{id}/logs', 'sandbox logs'),
    notImplemented('GET', '/v2/sandboxes/{id}/logs', 'sandbox logs'),
    notImplemented('GET', '/sandboxes/metrics', 'metrics of many sandboxes'),
  ];

  return (req, res) => {
    handle(req)
      .then((reply) => {
        if (reply.status === 204) return void res.writeHead(204).end();
        sendJson(res, reply.status, reply.json, reply.headers);
      })
      .catch((err: unknown) => sendError(res, err));
  };

  async function handle(req: IncomingMessage): Promise<Reply> {
    const url = new URL(req.url ?? '/', 'http://e2b');
    const caller = authenticate(req.headers['x-api-key']);
    if (rate > 0) buckets.take(caller, rate, 'too many E2B API requests for this API key', 'e2b-requests-per-second');
    const path = url.pathname.slice(E2B_PREFIX.length) || '/';
    const matching = routes.filter((r) => r.pattern.test(path));
    const found = matching.find((r) => r.method === req.method);
    if (!found) {
      req.resume();
      // Templates (build, aliases, tags) are E2B's phase 4: named as not implemented rather than as unknown paths.
      if (/^\/(v\d\/)?templates(\/|$)/.test(path))
        throw new CellaError('NOT_IMPLEMENTED', "templates are not implemented by Cella's E2B API: build a Cella image and use its name as templateID");
      if (matching.length === 0) throw new CellaError('UNKNOWN_OPERATION', `no E2B operation at ${url.pathname}`);
      throw new CellaError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
    }
    const params = (found.pattern.exec(path) as RegExpExecArray).slice(1).map(decodeParam);
    return found.handle({ params, query: url.searchParams, raw: await readBody(req, MAX_BODY_BYTES) });
  }

  function authenticate(header: string | string[] | undefined): string {
    const key = Array.isArray(header) ? header[0] : header;
    if (!key) throw new CellaError('UNAUTHENTICATED', 'missing API key: send the Cella API key as X-API-Key (E2B_API_KEY)');
    return opts.keys.check(`Bearer ${key}`);
  }

  function sandboxView(s: Sandbox): SandboxView {
    return {
      ...identityView(s),
      envdAccessToken: sandboxes.envdAccessToken(s.vm.id),
      trafficAccessToken: s.e2b.publicTraffic ? null : sandboxes.trafficAccessToken(s.vm.id),
      domain: opts.domain,
    };
  }

  function detailView(s: Sandbox): SandboxDetailView {
    return {
      ...listedView(s),
      envdAccessToken: sandboxes.envdAccessToken(s.vm.id),
      domain: opts.domain,
      allowInternetAccess: s.e2b.allowInternetAccess,
      lifecycle: { onTimeout: s.vm.spec.timeout?.onExpiry === 'suspend' ? 'pause' : 'kill', autoResume: s.e2b.autoResume },
    };
  }
}

/** What every view of a sandbox starts with: which it is, what it was made from, and its envd. */
function identityView(s: Sandbox): Pick<ListedSandboxView, 'sandboxID' | 'templateID' | 'alias' | 'clientID' | 'envdVersion'> {
  return { sandboxID: s.vm.id, templateID: s.e2b.templateId, alias: s.e2b.templateId, clientID: CLIENT_ID, envdVersion: ENVD_VERSION };
}

function listedView(s: Sandbox): ListedSandboxView {
  return {
    ...identityView(s),
    startedAt: new Date(s.vm.createdAt).toISOString(),
    endAt: new Date(s.vm.maxDeadline).toISOString(),
    cpuCount: s.vm.vcpus,
    memoryMB: s.vm.memoryMiB,
    // Not tracked per VM: its disk is the image's, grown on write.
    diskSizeMB: 0,
    metadata: s.e2b.metadata,
    state: s.state,
  };
}

/** Where a sandbox stands in the list's order: its start, then its id (the nextToken holds the last one sent). */
function positionOf(s: Sandbox): string {
  return `${String(s.vm.createdAt).padStart(15, '0')}.${s.vm.id}`;
}

/** The first `limit` of `rest`, with the token to the next page if any is left. */
function page(rest: Sandbox[], limit: number): Reply {
  const items = rest.slice(0, limit);
  const last = items[items.length - 1];
  const next = rest.length > limit && last ? { headers: { 'X-Next-Token': Buffer.from(positionOf(last)).toString('base64url') } } : {};
  return { status: 200, json: items.map(listedView), ...next };
}

interface ListQuery {
  states: SandboxState[];
  metadata: Record<string, string>;
  template: string | undefined;
  startedAfter: number | undefined;
  order: 'asc' | 'desc';
  limit: number;
  after: string | undefined;
}

function listQuery(q: URLSearchParams): ListQuery {
  const states = (q.get('state') ?? 'running,paused').split(',').filter((s) => s !== '');
  for (const s of states) if (s !== 'running' && s !== 'paused') throw new CellaError('INVALID_ARGUMENT', `state: "${s}" is neither running nor paused`);
  const order = q.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') throw new CellaError('INVALID_ARGUMENT', `order: "${order}" is neither asc nor desc`);
  const limitText = q.get('limit');
  const limit = limitText === null ? MAX_LIST_LIMIT : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT)
    throw new CellaError('INVALID_ARGUMENT', `limit: must be an integer from 1 to ${MAX_LIST_LIMIT}`);
  const startedText = q.get('startedAfter');
  const startedAfter = startedText === null ? undefined : Date.parse(startedText);
  if (Number.isNaN(startedAfter)) throw new CellaError('INVALID_ARGUMENT', `startedAfter: "${startedText}" is not an RFC 3339 time`);
  const token = q.get('nextToken');
  const after = token === null || token === '' ? undefined : Buffer.from(token, 'base64url').toString();
  if (after !== undefined && !/^\d{15}\.[^/]+$/.test(after)) throw new CellaError('INVALID_ARGUMENT', 'nextToken: not a token this API gave');
  return {
    states: states as SandboxState[],
    metadata: metadataFilter(q.get('metadata')),
    template: q.get('template') ?? undefined,
    startedAfter,
    order,
    limit,
    after,
  };
}

/**
 * The list's metadata filter as E2B's API decodes it: the value unescaped
 * once more, split into `k=v` pairs on `&`, each key and value unescaped
 * (the SDK escapes each pair, then the whole, as a query string).
 */
export function metadataFilter(raw: string | null): Record<string, string> {
  if (raw === null || raw === '') return {};
  const out: Record<string, string> = {};
  for (const pair of unescape(raw).split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CellaError('INVALID_ARGUMENT', `metadata: "${pair}" is not key=value`);
    out[unescape(pair.slice(0, eq))] = unescape(pair.slice(eq + 1));
  }
  return out;
}

/** Go's QueryUnescape: `+` is a space. */
function unescape(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw new CellaError('INVALID_ARGUMENT', `metadata: "${s}" is not a valid escaped string`);
  }
}

function unixSeconds(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new CellaError('INVALID_ARGUMENT', `${name}: must be a time in unix seconds`);
  return n;
}

function timeoutOf(seconds: number): number {
  if (seconds > MAX_TIMEOUT_SECONDS) throw new CellaError('INVALID_ARGUMENT', `timeout: ${seconds} s is longer than the ${MAX_TIMEOUT_SECONDS} s allowed`);
  return seconds;
}

/** Asks for what Cella cannot do yet: refused, rather than run without it. */
function refuseUnsupported(b: Static<typeof NewSandboxBody>): void {
  const network = b.network ?? {};
  const rules = Object.keys(network).filter((k) => k !== 'allowPublicTraffic' && network[k] !== undefined && network[k] !== null);
  if (rules.length > 0)
    throw new CellaError(
      'NOT_IMPLEMENTED',
      `network.${rules.join(', network.')}: network rules are not implemented by Cella's E2B API (allow_internet_access is)`,
    );
  if (network.allowPublicTraffic !== undefined && typeof network.allowPublicTraffic !== 'boolean')
    throw new CellaError('INVALID_ARGUMENT', 'network.allowPublicTraffic: must be a boolean');
  if (b.volumeMounts?.length) throw new CellaError('NOT_IMPLEMENTED', "volumeMounts are not implemented by Cella's E2B API");
  if (b.iam !== undefined && b.iam !== null) throw new CellaError('NOT_IMPLEMENTED', "iam is not implemented by Cella's E2B API");
}

const checks = new WeakMap<TSchema, TypeCheck<TSchema>>();

function body<T extends TSchema>(c: Call, schema: T): Static<T> {
  let check = checks.get(schema);
  if (!check) checks.set(schema, (check = TypeCompiler.Compile(schema)));
  return validate(check as TypeCheck<T>, parseJson(c.raw), 'body');
}

function idOf(c: Call): string {
  return c.params[0] as string;
}

function decodeParam(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new CellaError('INVALID_ARGUMENT', `"${s}" is not a valid path segment`);
  }
}

/**
 * E2B's error body. The statuses the SDK gives a class of their own are
 * kept for what they mean to it: a full host disk is 503 (ServiceBusyError),
 * the memory quota 429 (E2B's answer to too many sandboxes).
 */
export function e2bError(err: unknown): { status: number; headers: Record<string, string>; body: string } {
  const mapped = fromErrno(err);
  const e = isCellaError(mapped) ? mapped : new CellaError('INTERNAL', (err as Error)?.message ?? String(err));
  const status = e.code === 'INSUFFICIENT_CAPACITY' ? 503 : e.code === 'QUOTA_EXCEEDED' ? 429 : e.httpStatus;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (typeof e.details.retryAfterSeconds === 'number') headers['retry-after'] = String(e.details.retryAfterSeconds);
  return { status, headers, body: JSON.stringify({ code: status, message: e.message }) };
}

function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  const { status, headers, body: text } = e2bError(err);
  res.writeHead(status, headers).end(text);
}
