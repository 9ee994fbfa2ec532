/**
 * The API's HTTP side: the contract's routes compiled once; each request
 * authenticated, throttled, its body read within its limit, its path,
 * query, body and cursor checked into a typed Command and handed to its
 * operation; the Reply written, and any error rendered as the contract's
 * error body.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { TSchema } from '@sinclair/typebox';
import { CellaError, httpError, openApiDocument, type Operation, type RouteDef, routes } from '../contract/index.js';
import { parseJson, readBody, sendJson, validate } from '../http/index.js';
import { accountOperations } from './account.js';
import type { ApiContext, Command, Operations, Reply } from './command.js';
import { connectorOperations } from './connectors.js';
import { startOf } from './cursor.js';
import { imageOperations } from './images.js';
import { microvmOperations } from './microvms.js';
import { decodePathParam, queryObject, requestUrl } from './params.js';
import { Tags, tagOperations } from './tags.js';
import { Throttle } from './throttle.js';

/** Bodies beyond this are refused before parsing (the largest legal request is a few KiB). */
export const MAX_BODY_BYTES = 1024 * 1024;

interface CompiledRoute {
  op: Operation;
  def: RouteDef;
  pattern: RegExp;
  params: string[];
  body?: TypeCheck<TSchema>;
  query?: TypeCheck<TSchema>;
}

export function createApi(ctx: ApiContext): (req: IncomingMessage, res: ServerResponse) => void {
  const table = routes(ctx.minIdleSeconds);
  const compiled: CompiledRoute[] = Object.entries(table).map(([op, def]: [string, RouteDef]) => ({
    op: op as Operation,
    def,
    pattern: new RegExp(`^${def.path.replace(/\{\w+\}/g, '([^/]+)')}$`),
    params: [...def.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] ?? ''),
    ...(def.body ? { body: TypeCompiler.Compile(def.body) } : {}),
    ...(def.query ? { query: TypeCompiler.Compile(def.query) } : {}),
  }));
  const openapi = JSON.stringify(openApiDocument(table, ctx.version));
  const throttle = new Throttle(ctx.apiRateScale);
  // Every operation once: a missing one fails the type check here.
  const operations: Operations<Operation> = {
    ...microvmOperations(ctx),
    ...imageOperations(ctx),
    ...connectorOperations(ctx),
    ...tagOperations(new Tags(ctx.store, ctx.arns)),
    ...accountOperations(ctx),
  };
  // The one place a Command meets its operation: the union's members and the table's entries pair by `op`.
  const dispatch = (cmd: Command): Promise<Reply> => (operations[cmd.op] as (c: Command) => Promise<Reply>)(cmd);

  return (req, res) => {
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    handle(req, res, abort.signal).catch((err: unknown) => sendError(res, err));
  };

  async function handle(req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const url = requestUrl(req.url ?? '/');
    const candidates = compiled.filter((r) => r.pattern.test(url.pathname));
    const route = candidates.find((r) => r.def.method === req.method);
    // A SigV4 signature covers the body, so it is read (within MAX_BODY_BYTES) before the caller is known; an upload's is streamed after.
    const raw = route?.def.upload ? undefined : await readBody(req, MAX_BODY_BYTES);
    const caller = await ctx.auth.check({ method: req.method ?? '', target: req.url ?? '/', headers: req.headers }, raw);
    if (req.method === 'GET' && url.pathname === '/openapi.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(openapi);
      return;
    }
    if (candidates.length === 0) throw new CellaError('UNKNOWN_OPERATION', `no operation at ${url.pathname}`);
    if (!route) {
      res.setHeader('allow', candidates.map((r) => r.def.method).join(', '));
      throw new CellaError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
    }
    throttle.take(caller, route.op);
    const segments = route.pattern.exec(url.pathname)?.slice(1) ?? [];
    const params = Object.fromEntries(route.params.map((name, i) => [name, decodePathParam(name, segments[i] ?? '')]));
    const upload = route.def.upload ? await receiveUpload(req, route.def.upload.maxBytes) : undefined;
    const body = raw ? bodyOf(route, raw) : undefined;
    const query = route.query ? validate(route.query, queryObject(url.searchParams, route.def.query as TSchema), 'query') : undefined;
    if (!route.query && [...url.searchParams.keys()].length > 0) throw new CellaError('INVALID_ARGUMENT', `${route.op} takes no query parameters`);
    const after = startOf(route.op, (query as { nextToken?: string } | undefined)?.nextToken);
    // The checks above made each part its route's type; the union cannot see that they belong to one operation.
    const reply = await dispatch({ op: route.op, params, body, query, upload, after } as Command);
    const status = route.def.status ?? 200;
    if ('json' in reply) sendJson(res, status, reply.json);
    else if ('empty' in reply) res.writeHead(status, status === 204 ? {} : { 'content-length': 0 }).end();
    else await sendText(res, (write) => reply.text(write, signal));
  }

  async function receiveUpload(req: IncomingMessage, maxBytes: number): Promise<unknown> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBytes) {
      req.resume();
      throw new CellaError('PAYLOAD_TOO_LARGE', `the upload of ${declared} bytes exceeds ${maxBytes}`);
    }
    ctx.capacity.require('the upload');
    return ctx.images.upload(req, maxBytes);
  }
}

/** The body as its route's schema; a route without one takes nothing but whitespace or `{}`. */
function bodyOf(route: CompiledRoute, raw: Buffer): unknown {
  if (route.body) return validate(route.body, parseJson(raw), 'body');
  const text = raw.toString().trim();
  if (text !== '' && text !== '{}') throw new CellaError('INVALID_ARGUMENT', `${route.op} takes no request body`);
  return undefined;
}

async function sendText(res: ServerResponse, produce: (write: (chunk: Buffer) => void) => Promise<void>): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.flushHeaders();
  await produce((chunk) => res.write(chunk));
  res.end();
}

function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  const { status, headers, body } = httpError(err);
  res.writeHead(status, headers).end(body);
}
