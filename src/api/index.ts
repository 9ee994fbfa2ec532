/**
 * The HTTP API: routes from ./routes.ts, validated with their TypeBox
 * schemas, parsed into a typed command and handed to one dispatcher.
 * Errors are CellaErrors rendered as the contract's error bodies.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { Static, TSchema } from '@sinclair/typebox';
import type { AccessKeys, Authenticator, TokenMinter } from '../auth/index.js';
import type { DiskCapacity } from '../capacity/index.js';
import { type Connectors } from '../connectors/index.js';
import { type Arns, AUTH_HEADER, CellaError, checkTags, hookPort, httpError, type ImageVersionStarted, type ListMicrovmsResponse, MAX_DURATION_SECONDS, MAX_RUN_HOOK_PAYLOAD_BYTES, type Microvm, openApiDocument, type Operation, type PortSpecification, type RouteDef, routes, type Routes } from '../contract/index.js';
import { MANAGED_VERSION, type Images, type StartedVersion } from '../images/index.js';
import { admitVm, type Lifecycle, pendingVm } from '../lifecycle/index.js';
import type { LogHub } from '../logs/index.js';
import type { Store, Tx, VmRecord } from '../store/index.js';
import { usageOf, sumUsage } from '../usage/index.js';
import { Tags } from './tags.js';
import { Throttle } from './throttle.js';
import { NamePosition, OffsetPosition, VmPosition, decodeCursor, encodeCursor } from './cursor.js';
import { decodePathParam, queryObject, requestUrl } from './params.js';
import { buildView, connectorView, epochSeconds, imageSummary, imageView, managedImageView, managedVersionView, microvmSummary, microvmView, startedView, versionView } from './views.js';

export { answerProtocolErrors } from './protocol.js';

/** Bodies beyond this are refused before parsing (the largest legal request is a few KiB). */
export const MAX_BODY_BYTES = 1024 * 1024;

export interface ApiContext {
  store: Store;
  lifecycle: Lifecycle;
  images: Images;
  connectors: Connectors;
  logs: LogHub;
  /** Who may call: Bearer API keys and SigV4 access keys. */
  auth: Authenticator;
  accessKeys: AccessKeys;
  tokens: TokenMinter;
  /** Endpoints are `<id>.<domain>`. */
  domain: string;
  /** The server's region and account: every ARN it issues and accepts. */
  arns: Arns;
  minIdleSeconds: number;
  /** Multiplies the contract's API rates per caller (0: no throttling). */
  apiRateScale: number;
  /** What GetServerInfo reports: where the endpoints are and how to trust them. */
  info: { proxyPort: number; accelerator: string; region: string; caCertificate?: string };
  /** The baseline memory (the tiers) of all live MicroVMs together may not exceed this. */
  maxMemoryMiB: number;
  /** The host's disk: work that writes much is refused while it is nearly full. */
  capacity: Pick<DiskCapacity, 'require'>;
  version: string;
}

/** What each List's nextToken holds: its place in the List's order (one codec, ./cursor.ts). */
const CURSORS = {
  ListMicrovms: VmPosition,
  ListMicrovmImages: NamePosition,
  ListMicrovmImageVersions: OffsetPosition,
  ListMicrovmImageBuilds: OffsetPosition,
  ListManagedMicrovmImages: OffsetPosition,
  ListManagedMicrovmImageVersions: OffsetPosition,
  ListNetworkConnectors: OffsetPosition,
  ListAccessKeys: OffsetPosition,
} as const satisfies Record<Exclude<Extract<Operation, `List${string}`>, 'ListTags'>, TSchema>;
type Listing = keyof typeof CURSORS;

type Input<K extends Operation> = {
  params: Record<string, string>;
  /** What an upload route stored from the raw body. */
  upload: Routes[K] extends { upload: object } ? { uri: string; sizeInBytes: number; sha256: string } : undefined;
  body: Routes[K] extends { body: infer B extends TSchema } ? Static<B> : undefined;
  query: Routes[K] extends { query: infer Q extends TSchema } ? Static<Q> : undefined;
  /** A List's starting place, from its nextToken (read with the query, before anything is looked up). */
  after: K extends Listing ? Static<(typeof CURSORS)[K]> | undefined : undefined;
};

/** A parsed request: the discriminated union the dispatcher switches on. */
type Command = { [K in Operation]: { op: K } & Input<K> }[Operation];

type Reply = { json: unknown } | { empty: true } | { stream: (res: ServerResponse, signal: AbortSignal) => Promise<void> };

interface CompiledRoute {
  op: Operation;
  def: RouteDef;
  method: string;
  pattern: RegExp;
  params: string[];
  body?: TypeCheck<TSchema>;
  query?: TypeCheck<TSchema>;
}

export function createApi(ctx: ApiContext): (req: IncomingMessage, res: ServerResponse) => void {
  const table = routes(ctx.minIdleSeconds);
  const compiled: CompiledRoute[] = Object.entries(table).map(([op, def]) => {
    const d = def as RouteDef;
    const params = [...d.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string);
    const pattern = new RegExp(`^${d.path.replace(/\{\w+\}/g, '([^/]+)')}$`);
    return {
      op: op as Operation,
      def: d,
      method: d.method,
      pattern,
      params,
      ...(d.body ? { body: TypeCompiler.Compile(d.body) } : {}),
      ...(d.query ? { query: TypeCompiler.Compile(d.query) } : {}),
    };
  });
  const openapi = JSON.stringify(openApiDocument(table, ctx.version));
  const chipset = ctx.info.accelerator.toUpperCase();
  const throttle = new Throttle(ctx.apiRateScale);
  const tags = new Tags(ctx.store, ctx.arns);

  return (req, res) => {
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    handle(req, res, abort.signal).catch((err: unknown) => sendError(res, err));
  };

  async function handle(req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const url = requestUrl(req.url ?? '/');
    const candidates = compiled.filter((r) => r.pattern.test(url.pathname));
    const route = candidates.find((r) => r.method === req.method);
    // A SigV4 signature covers the body, so it is read (within MAX_BODY_BYTES) before the caller is known; an upload's is streamed after.
    const raw = route?.def.upload ? undefined : await readBody(req);
    const caller = await ctx.auth.check({ method: req.method ?? '', target: req.url ?? '/', headers: req.headers }, raw);
    if (req.method === 'GET' && url.pathname === '/openapi.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(openapi);
      return;
    }
    if (candidates.length === 0) throw new CellaError('UNKNOWN_OPERATION', `no operation at ${url.pathname}`);
    if (!route) {
      res.setHeader('allow', candidates.map((r) => r.method).join(', '));
      throw new CellaError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
    }
    throttle.take(caller, route.op);
    const m = route.pattern.exec(url.pathname) as RegExpExecArray;
    const params: Record<string, string> = {};
    route.params.forEach((name, i) => (params[name] = decodePathParam(name, m[i + 1] as string)));
    let body: unknown;
    let upload: unknown;
    if (route.def.upload) {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > route.def.upload.maxBytes) {
        req.resume();
        throw new CellaError('PAYLOAD_TOO_LARGE', `the upload of ${declared} bytes exceeds ${route.def.upload.maxBytes}`);
      }
      ctx.capacity.require('the upload');
      upload = await ctx.images.upload(req, route.def.upload.maxBytes);
    } else if (raw) {
      body = route.body ? validate(route.body, parseJson(raw), 'body') : undefined;
      if (!route.body && raw.length > 0 && raw.toString().trim() !== '' && raw.toString().trim() !== '{}') {
        throw new CellaError('INVALID_ARGUMENT', `${route.op} takes no request body`);
      }
    }
    const query = route.query ? validate(route.query, queryObject(url.searchParams, route.def.query as TSchema), 'query') : undefined;
    if (!route.query && [...url.searchParams.keys()].length > 0) throw new CellaError('INVALID_ARGUMENT', `${route.op} takes no query parameters`);
    const token = (query as { nextToken?: string } | undefined)?.nextToken;
    const shape: TSchema | undefined = (CURSORS as Partial<Record<Operation, TSchema>>)[route.op];
    const after = shape && token !== undefined ? decodeCursor(route.op, shape, token) : undefined;
    const reply = await dispatch({ op: route.op, params, body, query, upload, after } as Command);
    const status = route.def.status ?? 200;
    if ('json' in reply) res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(reply.json));
    else if ('empty' in reply) res.writeHead(status, status === 204 ? {} : { 'content-length': 0 }).end();
    else await reply.stream(res, signal);
  }

  async function dispatch(cmd: Command): Promise<Reply> {
    switch (cmd.op) {
      case 'RunMicrovm':
        return { json: await runMicrovm(cmd.body) };
      case 'GetMicrovm':
        return { json: microvmView(await ctx.lifecycle.require(cmd.params.microvmIdentifier as string), ctx.domain) };
      case 'ListMicrovms':
        return { json: await listMicrovms(cmd.query, cmd.after) };
      case 'SuspendMicrovm':
        await ctx.lifecycle.suspend(cmd.params.microvmIdentifier as string);
        return { empty: true };
      case 'ResumeMicrovm':
        await ctx.lifecycle.resume(cmd.params.microvmIdentifier as string);
        return { empty: true };
      case 'TerminateMicrovm':
        await ctx.lifecycle.terminate(cmd.params.microvmIdentifier as string);
        return { empty: true };
      case 'CreateMicrovmAuthToken':
        return { json: await mintToken(cmd.params.microvmIdentifier as string, 'http', cmd.body.allowedPorts, cmd.body.expirationInMinutes) };
      case 'CreateMicrovmShellAuthToken':
        return { json: await mintToken(cmd.params.microvmIdentifier as string, 'shell', [{ port: 8022 }], cmd.body.expirationInMinutes) };
      case 'GetMicrovmLogs': {
        const rec = await ctx.lifecycle.require(cmd.params.microvmIdentifier as string);
        if (rec.spec.loggingDisabled) throw new CellaError('INVALID_STATE', `logging is disabled for MicroVM ${rec.id}`, { details: { resourceId: rec.id, resourceType: 'Microvm' } });
        const follow = cmd.query.follow ?? false;
        return {
          stream: (res, signal) =>
            textStream(res, (write) =>
              ctx.logs.stream(rec.id, { follow, signal, isLive: async () => (await ctx.store.getVm(rec.id))?.state !== 'TERMINATED' }, write),
            ),
        };
      }
      case 'GetServerInfo':
        return { json: { version: ctx.version, domain: ctx.domain, accountId: ctx.arns.accountId, ...ctx.info } };
      case 'GetMicrovmUsage':
        return { json: usageOf(await ctx.lifecycle.require(cmd.params.microvmIdentifier as string), Date.now()) };
      case 'GetUsage': {
        const now = Date.now();
        const all = (await ctx.store.listVms({ limit: Number.MAX_SAFE_INTEGER })).map((v) => usageOf(v, now));
        return { json: { total: sumUsage(all), microvms: all } };
      }
      case 'CreateMicrovmImage': {
        const b = cmd.body;
        if (b.tags) checkTags(b.tags, 'tags');
        const r = await once('CreateMicrovmImage', b, () => ctx.capacity.require('CreateMicrovmImage'), (tx) => ctx.images.create(b, tx), (s) => s.build.buildId);
        if ('replay' in r) return { json: await started(await replayBuild(r.replay)) };
        void ctx.images.enqueue(r.made);
        return { json: await started(r.made) };
      }
      case 'UpdateMicrovmImage': {
        const b = cmd.body;
        const id = cmd.params.imageIdentifier as string;
        const scope = `UpdateMicrovmImage:${ctx.arns.imageName(id)}`;
        const r = await once(scope, b, () => ctx.capacity.require('UpdateMicrovmImage'), (tx) => ctx.images.update(id, b, tx), (s) => s.build.buildId);
        if ('replay' in r) return { json: await started(await replayBuild(r.replay)) };
        void ctx.images.enqueue(r.made);
        return { json: await started(r.made) };
      }
      case 'GetMicrovmImage': {
        const img = await ctx.images.require(cmd.params.imageIdentifier as string);
        return { json: imageView(img, await ctx.images.latestVersions(img.name)) };
      }
      case 'ListMicrovmImages': {
        const q = cmd.query;
        const limit = q.maxResults ?? 50;
        const page = await ctx.store.listImages({ limit: limit + 1, ...(cmd.after ? { after: cmd.after.n } : {}) });
        const items = page.slice(0, limit);
        const last = items[items.length - 1];
        return {
          json: {
            // The contract applies nameFilter after paging: a page may come back short or empty with a nextToken.
            items: await Promise.all(
              items.filter((i) => !q.nameFilter || i.name.includes(q.nameFilter)).map(async (i) => imageSummary(i, await ctx.images.latestVersions(i.name))),
            ),
            ...(page.length > limit && last ? { nextToken: encodeCursor(cmd.op, NamePosition, { n: last.name }) } : {}),
          },
        };
      }
      case 'DeleteMicrovmImage': {
        const id = cmd.params.imageIdentifier as string;
        const r = await ctx.images.delete(id, async (tx, name) => (await tx.liveVms()).some((v) => v.imageName === name));
        return { json: { imageIdentifier: id, state: r.state } };
      }
      case 'ListMicrovmImageVersions': {
        const img = await ctx.images.require(cmd.params.imageIdentifier as string);
        return { json: paged(cmd, await ctx.store.listVersions(img.name), (v) => versionView(img, v)) };
      }
      case 'GetMicrovmImageVersion': {
        const img = await ctx.images.require(cmd.params.imageIdentifier as string);
        return { json: versionView(img, await ctx.images.requireVersion(img.name, cmd.params.imageVersion as string)) };
      }
      case 'UpdateMicrovmImageVersion': {
        const img = await ctx.images.require(cmd.params.imageIdentifier as string);
        return { json: versionView(img, await ctx.images.setStatus(img.name, cmd.params.imageVersion as string, cmd.body.status)) };
      }
      case 'DeleteMicrovmImageVersion': {
        const id = cmd.params.imageIdentifier as string;
        const version = cmd.params.imageVersion as string;
        const r = await ctx.images.deleteVersion(id, version, async (name, ver) => (await ctx.store.liveVms()).some((v) => v.imageName === name && v.imageVersion === ver));
        return { json: { imageIdentifier: id, imageVersion: version, state: r.state } };
      }
      case 'ListMicrovmImageBuilds': {
        const q = cmd.query;
        const v = await ctx.images.requireVersion(cmd.params.imageIdentifier as string, cmd.params.imageVersion as string);
        const img = await ctx.images.require(v.imageName);
        const all = (await ctx.store.listBuilds(v.imageName, v.version)).map((b) => buildView(img, b, chipset));
        const wanted = all.filter(
          (b) => (!q.architecture || b.architecture === q.architecture) && (!q.chipset || b.chipset === q.chipset) && (!q.chipsetGeneration || b.chipsetGeneration === q.chipsetGeneration),
        );
        return { json: paged(cmd, wanted, (b) => b) };
      }
      case 'GetMicrovmImageBuild': {
        const { imageIdentifier, imageVersion, buildId } = cmd.params;
        const b = await ctx.images.requireBuild(imageIdentifier as string, imageVersion as string, buildId as string);
        const img = await ctx.images.require(b.imageName);
        return { json: { ...buildView(img, b, chipset), ...(b.snapshotBuild ? { snapshotBuild: b.snapshotBuild } : {}) } };
      }
      case 'GetMicrovmImageBuildLog': {
        const { imageIdentifier, imageVersion, buildId } = cmd.params;
        const b = await ctx.images.requireBuild(imageIdentifier as string, imageVersion as string, buildId as string);
        const file = ctx.images.buildLog(b.buildId);
        const follow = cmd.query.follow ?? false;
        return { stream: (res, signal) => textStream(res, (write) => tailFile(file, write, { signal, until: () => !follow || !ctx.images.isBuilding(b.buildId) })) };
      }
      case 'ListManagedMicrovmImages':
        return {
          json: paged(cmd, ctx.images.managed(), (b) => managedImageView(ctx.arns.managedImage(b.name), b)),
        };
      case 'ListManagedMicrovmImageVersions': {
        const id = cmd.params.imageIdentifier as string;
        const name = ctx.arns.managedImageName(id) ?? id;
        const base = ctx.images.managed().find((b) => b.name === name);
        if (!base) throw new CellaError('NOT_FOUND', `managed image ${id} not found`, { details: { resourceId: id, resourceType: 'MicrovmImage' } });
        return { json: paged(cmd, [base], (b) => managedVersionView(ctx.arns.managedImage(b.name), MANAGED_VERSION, b)) };
      }
      case 'UploadCodeArtifact':
        return { json: cmd.upload };
      case 'TagResource':
        await tags.tag(cmd.params.Resource as string, cmd.body.Tags);
        return { empty: true };
      case 'UntagResource':
        await tags.untag(cmd.params.Resource as string, cmd.query.tagKeys);
        return { empty: true };
      case 'ListTags':
        return { json: { Tags: await tags.list(cmd.params.Resource as string) } };
      case 'CreateNetworkConnector':
        return { json: connectorView(await ctx.connectors.create(cmd.body)) };
      case 'ListNetworkConnectors':
        return { json: paged(cmd, await ctx.store.listConnectors(), connectorView) };
      case 'GetNetworkConnector':
        return { json: connectorView(await ctx.connectors.require(cmd.params.connectorIdentifier as string)) };
      case 'DeleteNetworkConnector':
        await ctx.connectors.delete(cmd.params.connectorIdentifier as string);
        return { empty: true };
      case 'CreateAccessKey': {
        const k = await ctx.accessKeys.create();
        return { json: { accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey, createdAt: epochSeconds(k.createdAt) } };
      }
      case 'ListAccessKeys':
        return { json: paged(cmd, await ctx.accessKeys.list(), (k) => ({ accessKeyId: k.accessKeyId, createdAt: epochSeconds(k.createdAt) })) };
      case 'DeleteAccessKey':
        await ctx.accessKeys.revoke(cmd.params.accessKeyId as string);
        return { empty: true };
      default: {
        const never: never = cmd;
        throw new CellaError('UNKNOWN_OPERATION', `unhandled operation ${(never as { op: string }).op}`);
      }
    }
  }

  async function runMicrovm(b: Static<Routes['RunMicrovm']['body']>): Promise<Microvm> {
    if (b.runHookPayload !== undefined && Buffer.byteLength(b.runHookPayload) > MAX_RUN_HOOK_PAYLOAD_BYTES) {
      throw new CellaError('INVALID_ARGUMENT', `runHookPayload is ${Buffer.byteLength(b.runHookPayload)} bytes; at most ${MAX_RUN_HOOK_PAYLOAD_BYTES} are allowed`);
    }
    const name = ctx.arns.imageName(b.imageIdentifier);
    const prepare = async (): Promise<VmRecord> => {
      const image = await ctx.images.runnable(name, b.imageVersion);
      ctx.capacity.require('RunMicrovm');
      const { ingress, egress, policy } = await ctx.connectors.resolve(
        b.ingressNetworkConnectors,
        b.egressNetworkConnectors ?? image.config.egressNetworkConnectors,
        hookPort(image.config.hooks),
      );
      return pendingVm({
        id: `mvm-${randomUUID()}`,
        image,
        now: Date.now(),
        spec: {
          ...(b.executionRoleArn ? { executionRoleArn: b.executionRoleArn } : {}),
          ...(b.idlePolicy ? { idlePolicy: b.idlePolicy } : {}),
          maximumDurationInSeconds: b.maximumDurationInSeconds ?? MAX_DURATION_SECONDS,
          ingressNetworkConnectors: ingress,
          egressNetworkConnectors: egress,
          network: policy,
          loggingDisabled: b.logging !== undefined && 'disabled' in b.logging,
        },
      });
    };
    const insert = async (tx: Tx, rec: VmRecord): Promise<VmRecord> => {
      // Again in the transaction: an image deleted since `prepare` read it has no VM made from it (its delete checks for live VMs in one).
      await ctx.images.runnable(name, b.imageVersion, tx);
      await admitVm(tx, rec, ctx.maxMemoryMiB);
      return rec;
    };
    const r = await once('RunMicrovm', b, prepare, insert, (rec) => rec.id);
    if ('replay' in r) return microvmView(await ctx.lifecycle.require(r.replay), ctx.domain);
    ctx.lifecycle.start(r.made, b.runHookPayload);
    return microvmView(r.made, ctx.domain);
  }

  /**
   * A request with a clientToken makes its resource once: a repeat answers
   * what the first made (`replay`). `prepare` runs outside the transaction
   * (checks, reads); `make` runs in it, with the token's record, after the
   * token is looked up again there: of two requests with one token at once,
   * the second replays the first.
   */
  async function once<P, T>(
    scope: string,
    body: Idempotent,
    prepare: () => P | Promise<P>,
    make: (tx: Tx, prepared: P) => Promise<T>,
    idOf: (made: T) => string,
  ): Promise<{ made: T } | { replay: string }> {
    const prior = await replayOf(ctx.store, scope, body);
    if (prior) return { replay: prior };
    const prepared = await prepare();
    return ctx.store.tx(async (tx) => {
      const again = await replayOf(tx, scope, body);
      if (again) return { replay: again };
      const made = await make(tx, prepared);
      await remember(tx, scope, body, idOf(made));
      return { made };
    });
  }

  async function listMicrovms(q: Static<Routes['ListMicrovms']['query']>, after: Static<typeof VmPosition> | undefined): Promise<ListMicrovmsResponse> {
    const limit = q.maxResults ?? 50;
    const page = await ctx.store.listVms({
      limit: limit + 1,
      ...(after ? { after: { createdAt: after.c, id: after.i } } : {}),
      ...(q.imageIdentifier ? { imageName: ctx.arns.imageName(q.imageIdentifier) } : {}),
      ...(q.imageVersion ? { imageVersion: q.imageVersion } : {}),
    });
    const items = page.slice(0, limit);
    const last = items[items.length - 1];
    return {
      items: items.map(microvmSummary),
      ...(page.length > limit && last ? { nextToken: encodeCursor('ListMicrovms', VmPosition, { c: last.createdAt, i: last.id }) } : {}),
    };
  }

  async function mintToken(id: string, kind: 'http' | 'shell', ports: PortSpecification[], minutes: number): Promise<{ authToken: Record<string, string> }> {
    const rec = await ctx.lifecycle.require(id);
    if (rec.state === 'TERMINATING' || rec.state === 'TERMINATED') {
      throw new CellaError('INVALID_STATE', `MicroVM ${id} is ${rec.state}`, { details: { resourceId: id, resourceType: 'Microvm' } });
    }
    for (const p of ports) {
      if ('range' in p && p.range.startPort > p.range.endPort) throw new CellaError('INVALID_ARGUMENT', `port range ${p.range.startPort}-${p.range.endPort} is empty`);
    }
    const ingress = rec.spec.ingressNetworkConnectors.map((arn) => ctx.arns.managedConnectorName(arn));
    if (kind === 'shell' && !ingress.includes('SHELL_INGRESS') && !ingress.includes('ALL_INGRESS')) {
      throw new CellaError('INVALID_ARGUMENT', `MicroVM ${id} was not launched with the SHELL_INGRESS connector`);
    }
    if (kind === 'http' && ingress.length === 1 && ingress[0] === 'NO_INGRESS') {
      throw new CellaError('INVALID_ARGUMENT', `MicroVM ${id} was launched with NO_INGRESS: it has no endpoint`);
    }
    const t = await ctx.tokens.mint(id, kind, ports, minutes);
    await ctx.store.putToken({ jti: t.jti, vmId: id, kind, ports: JSON.stringify(ports), expiresAt: t.expiresAt, createdAt: Date.now() });
    return { authToken: { [AUTH_HEADER]: t.token } };
  }

  async function started(s: StartedVersion): Promise<ImageVersionStarted> {
    return startedView(s, await ctx.images.latestVersions(s.image.name));
  }

  /** A replayed create/update answers what the first one did, even if the image is gone since. */
  async function replayBuild(buildId: string): Promise<StartedVersion> {
    const build = await ctx.store.getBuild(buildId);
    const version = build && (await ctx.store.getVersion(build.imageName, build.version));
    const image = build && (await ctx.store.getImage(build.imageName));
    if (!build || !version || !image) throw new CellaError('NOT_FOUND', `the image this clientToken created no longer exists`, { details: { resourceType: 'MicrovmImage' } });
    return { image, version, build };
  }

}

/** Pages a short list held in memory, in its order; the cursor holds the offset. */
function paged<T, U>(
  cmd: { op: Listing; query: { maxResults?: number }; after: Static<typeof OffsetPosition> | undefined },
  all: T[],
  view: (t: T) => U,
): { items: U[]; nextToken?: string } {
  const limit = cmd.query.maxResults ?? 50;
  const offset = cmd.after?.o ?? 0;
  const items = all.slice(offset, offset + limit).map(view);
  return { items, ...(offset + limit < all.length ? { nextToken: encodeCursor(cmd.op, OffsetPosition, { o: offset + limit }) } : {}) };
}

type Idempotent = { clientToken?: string } & Record<string, unknown>;

/** The resource an earlier request with this clientToken made, if any; the token with other parameters is a conflict. */
async function replayOf(db: Tx, scope: string, body: Idempotent): Promise<string | undefined> {
  if (!body.clientToken) return undefined;
  const prior = await db.findIdempotent(scope, body.clientToken);
  if (!prior) return undefined;
  if (prior.hash !== requestHash(body)) {
    throw new CellaError('IDEMPOTENCY_CONFLICT', `clientToken ${body.clientToken} was already used with different parameters`, {
      details: { resourceId: body.clientToken, resourceType: 'ClientToken' },
    });
  }
  return prior.resourceId;
}

/** Records which resource a request with a clientToken made (inside the transaction that made it). */
async function remember(tx: Tx, scope: string, body: Idempotent, resourceId: string): Promise<void> {
  if (body.clientToken) await tx.putIdempotent(scope, body.clientToken, requestHash(body), resourceId);
}

/** Stable over key order, so the same request always hashes the same. */
function requestHash(body: Record<string, unknown>): string {
  const canon = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().filter((k) => k !== 'clientToken').map((k) => [k, canon((v as Record<string, unknown>)[k])]))
      : Array.isArray(v)
        ? v.map(canon)
        : v;
  return createHash('sha256').update(JSON.stringify(canon(body))).digest('hex');
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      req.resume();
      reject(new CellaError('PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds ${MAX_BODY_BYTES}`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        reject(new CellaError('PAYLOAD_TOO_LARGE', `request body exceeds ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJson(raw: Buffer): unknown {
  if (raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new CellaError('MALFORMED_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

function validate<T extends TSchema>(check: TypeCheck<T>, value: unknown, where: string): Static<T> {
  if (check.Check(value)) return value;
  const first = check.Errors(value).First();
  const at = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : where;
  throw new CellaError('INVALID_ARGUMENT', `${where === 'body' ? '' : `${where} `}${at || where}: ${first?.message ?? 'invalid value'}`);
}

/** Writes `file` from the start, then what is appended to it, until `until()` holds (checked after each read). */
async function tailFile(file: string, write: (chunk: Buffer) => void, opts: { signal: AbortSignal; until: () => boolean }): Promise<void> {
  let offset = 0;
  for (;;) {
    const done = opts.until();
    if (existsSync(file)) {
      const buf = await readFile(file);
      if (buf.length > offset) write(buf.subarray(offset));
      offset = Math.max(offset, buf.length);
    }
    if (done || opts.signal.aborted) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function textStream(res: ServerResponse, produce: (write: (chunk: Buffer) => void) => Promise<void>): Promise<void> {
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
