/**
 * The per-VM HTTPS endpoints: `https://<vm-id>.<domain>` → the VM's port,
 * as in section 6 of the contract. TLS towards clients (HTTP/2 by ALPN,
 * HTTP/1.1 otherwise, WebSocket over HTTP/1.1), plain HTTP/1.1 towards the
 * guest through its namespace address, with a keep-alive pool per VM.
 *
 * Each request: resolve the VM from the host name → check the token
 * (decrypts, not expired, this VM, not revoked) → choose the port (header,
 * then WebSocket subprotocol, then 8080) and check it against the token →
 * wake the VM (auto-resume) → forward, streaming both ways. Every request
 * and open stream holds the VM active for the idle policy.
 */
import { Agent, request, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { createConnection } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { AUTH_HEADER, CellaError, DEFAULT_ENDPOINT_PORT, httpError, isCellaError, PORT_HEADER, type PortSpecification, rawHttpError, RESERVED_HEADER_PREFIX, SHELL_PATH, WS_AUTH_PREFIX, WS_MARKER, WS_PORT_PREFIX } from '../contract/index.js';
import type { EndpointTokenClaims, TokenMinter } from '../auth/index.js';
import { ENVD_PORT, sandboxNotFound, type EnvdAccess, type EnvdHandler } from '../e2b/index.js';
import type { Engine } from '../engine/index.js';
import { TokenBuckets } from '../limits/index.js';
import type { Lifecycle } from '../lifecycle/index.js';
import type { Store, VmRecord } from '../store/index.js';
import type { TlsMaterial } from '../tls/index.js';
import { DEFAULT_CONNECTION_LIMITS, limitConnections, type ConnectionLimits } from './connections.js';

export type { ConnectionLimits } from './connections.js';

// Node gives header names in lower case.
const AUTH = AUTH_HEADER.toLowerCase();
const PORT = PORT_HEADER.toLowerCase();
const RESERVED = RESERVED_HEADER_PREFIX.toLowerCase();
const TOKEN_CACHE = 10_000;
const DEFAULT_RPS_PER_VCPU = 100;
/** Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy; HTTP/2 pseudo-headers neither (checked apart). */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings', 'host']);

export interface ProxyOptions {
  store: Store;
  lifecycle: Lifecycle;
  engine: Pick<Engine, 'get'>;
  tokens: TokenMinter;
  tls: TlsMaterial;
  domain: string;
  port: number;
  host?: string;
  /** Requests in flight per VM per vCPU before 429 (the contract's connection quota is 8 per vCPU; held auto-resume requests count too). */
  inflightPerVcpu?: number;
  /**
   * Requests per second per VM per vCPU before 429 (default 100: the
   * contract's 10 × 10, as the API's rates are scaled; 0: no limit). A flood
   * on one endpoint is stopped here, before it costs the guest anything.
   */
  rpsPerVcpu?: number;
  /** Connections per remote address, and the time a connection has to send its first request (defaults: DEFAULT_CONNECTION_LIMITS). */
  connections?: Partial<ConnectionLimits>;
  /** Handles `wss://<endpoint>/shell` for shell tokens (the shell module). */
  shell?: (vm: VmRecord, req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /**
   * E2B sandboxes: `<port>-<id>.<domain>` (or the bare domain with
   * E2b-Sandbox-Id/E2b-Sandbox-Port headers), port 49983 to the in-process
   * envd behind the sandbox's X-Access-Token, other ports to the guest.
   */
  e2b?: { access: EnvdAccess; envd: EnvdHandler };
  log?: (line: string) => void;
}

export interface EndpointProxy {
  port: number;
  close(): Promise<void>;
}

interface Target {
  vm: VmRecord;
  port: number;
  claims: EndpointTokenClaims;
}

export async function startProxy(opts: ProxyOptions): Promise<EndpointProxy> {
  const { store, lifecycle, tokens, domain } = opts;
  const log = opts.log ?? (() => {});
  const perVcpu = opts.inflightPerVcpu ?? 64;
  const rpsPerVcpu = opts.rpsPerVcpu ?? DEFAULT_RPS_PER_VCPU;
  const rates = new TokenBuckets();
  const agents = new Map<string, Agent>();
  const inflight = new Map<string, number>();
  const suffix = `.${domain}`;
  /** Decrypted tokens, so a keep-alive client does not pay a decryption per request; expiry and revocation are still checked every time. */
  const opened = new Map<string, EndpointTokenClaims>();
  const openToken = async (token: string): Promise<EndpointTokenClaims> => {
    let claims = opened.get(token);
    if (!claims) {
      claims = await tokens.open(token);
      if (opened.size >= TOKEN_CACHE) opened.delete(opened.keys().next().value as string);
      opened.set(token, claims);
    }
    if (claims.expiresAt <= Date.now()) {
      opened.delete(token);
      throw new CellaError('ACCESS_DENIED', 'invalid or expired token: the token has expired');
    }
    return claims;
  };

  // A VM that stops running takes its pooled connections with it.
  const onState = (rec: VmRecord): void => {
    if (rec.state === 'TERMINATED') rates.drop(rec.id);
    // Open envd streams end with their sandbox, abruptly: the SDK then asks /health (502) and reports the sandbox killed.
    if (rec.state !== 'RUNNING' && rec.state !== 'PENDING') opts.e2b?.envd.abort(rec.id, { forget: rec.state === 'TERMINATING' || rec.state === 'TERMINATED' });
    if (rec.state === 'RUNNING') return;
    agents.get(rec.id)?.destroy();
    agents.delete(rec.id);
  };
  lifecycle.on('state', onState);

  const agentFor = (id: string): Agent => {
    let a = agents.get(id);
    if (!a) agents.set(id, (a = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 16, keepAliveMsecs: 1000 })));
    return a;
  };

  /** Everything up to the guest's address; throws CellaErrors that map to the contract's proxy errors. */
  async function resolve(hostHeader: string | undefined, headers: IncomingHttpHeaders, subprotocols: string[]): Promise<Target & { release: () => void }> {
    const host = (hostHeader ?? '').replace(/:\d+$/, '').toLowerCase();
    if (!host.endsWith(suffix) || host.length === suffix.length) throw new CellaError('INVALID_ARGUMENT', `${host || 'no host'} is not an endpoint of ${domain}`);
    const id = host.slice(0, -suffix.length);
    const token = header(headers, AUTH) ?? subprotocols.find((p) => p.startsWith(WS_AUTH_PREFIX))?.slice(WS_AUTH_PREFIX.length);
    if (!token) throw new CellaError('ACCESS_DENIED', `missing token: send it in the ${AUTH_HEADER} header`);
    const claims = await openToken(token);
    if (claims.vmId !== id) throw new CellaError('ACCESS_DENIED', 'the token is for another MicroVM');
    if (!(await store.getToken(claims.jti))) throw new CellaError('ACCESS_DENIED', 'the token was revoked (its MicroVM terminated)');
    const vm = await store.getVm(id);
    if (!vm || vm.state === 'TERMINATED' || vm.state === 'TERMINATING') throw new CellaError('ACCESS_DENIED', 'the MicroVM is terminated');
    if (!ingressAllows(vm.spec.ingressNetworkConnectors, claims.kind)) {
      throw new CellaError('ACCESS_DENIED', `the MicroVM's ingress connectors do not allow ${claims.kind === 'shell' ? 'a shell' : 'HTTP'}`);
    }
    const port = choosePort(header(headers, PORT), subprotocols);
    // A shell token names no app port: it opens /shell only, which answers for itself.
    if (claims.kind === 'http' && !portAllowed(claims.ports, port)) throw new CellaError('ACCESS_DENIED', 'Access to port denied');
    if (rpsPerVcpu > 0) {
      const rate = rpsPerVcpu * vm.vcpus;
      rates.take(id, rate, `MicroVM ${id} is limited to ${rate} requests per second`, 'endpoint-rps');
    }
    const limit = perVcpu * vm.vcpus;
    const n = inflight.get(id) ?? 0;
    if (n >= limit) throw new CellaError('THROTTLED', `MicroVM ${id} already has ${n} requests in flight (limit ${limit})`);
    inflight.set(id, n + 1);
    const idle = lifecycle.holdActive(id);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      idle();
      const left = (inflight.get(id) ?? 1) - 1;
      if (left <= 0) inflight.delete(id);
      else inflight.set(id, left);
    };
    if (vm.state === 'RUNNING') return { vm, port, claims, release };
    try {
      const running = await lifecycle.wake(id).catch((err: unknown) => {
        if (isCellaError(err, 'INVALID_STATE')) throw err;
        throw new CellaError('UPSTREAM_FAILED', `the MicroVM could not be resumed: ${(err as Error).message}`, { cause: err });
      });
      return { vm: running, port, claims, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  function address(id: string, port: number): { host: string; port: number } {
    const vm = opts.engine.get(id);
    if (!vm) throw new CellaError('UPSTREAM_FAILED', 'the MicroVM is not running');
    return vm.address(port);
  }

  async function onRequest(req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | import('node:http').ServerResponse): Promise<void> {
    const authority = (req.headers[':authority'] as string | undefined) ?? req.headers.host;
    const sandbox = opts.e2b && e2bTarget(authority, req.headers);
    if (sandbox) return onE2b(sandbox, authority, req, res);
    let target: Target & { release: () => void };
    try {
      target = await resolve(authority, req.headers, []);
    } catch (err) {
      return sendError(res, err);
    }
    if (target.claims.kind === 'shell') {
      target.release();
      return sendError(res, new CellaError('UPSTREAM_FAILED', 'a shell token only opens wss://<endpoint>/shell'));
    }
    res.once('close', target.release);
    forward(req, res, authority, target.vm.id, target.port);
  }

  /** `<port>-<id>.<domain>`, or the bare domain routed by E2B's headers (E2B_SANDBOX_URL mode). */
  function e2bTarget(authority: string | undefined, headers: IncomingHttpHeaders): { id: string; port: number } | undefined {
    const host = (authority ?? '').replace(/:\d+$/, '').toLowerCase();
    if (host === domain) {
      const id = header(headers, 'e2b-sandbox-id');
      const port = Number(header(headers, 'e2b-sandbox-port') ?? ENVD_PORT);
      return id && Number.isInteger(port) && port > 0 && port < 65536 ? { id, port } : undefined;
    }
    if (!host.endsWith(suffix)) return undefined;
    const m = /^(\d{1,5})-([a-z0-9-]+)$/.exec(host.slice(0, -suffix.length));
    return m && Number(m[1]) > 0 && Number(m[1]) < 65536 ? { id: m[2]!, port: Number(m[1]) } : undefined;
  }

  /** An E2B sandbox's port: envd in process for 49983, the guest otherwise; 502 JSON when the sandbox is not there. */
  async function onE2b(
    t: { id: string; port: number },
    authority: string | undefined,
    req: Http2ServerRequest | IncomingMessage,
    res: Http2ServerResponse | import('node:http').ServerResponse,
  ): Promise<void> {
    const e2b = opts.e2b!;
    const notFound = (): void => {
      const nf = sandboxNotFound(t.id);
      if (res.headersSent) return void res.destroy();
      res.writeHead(nf.status, { 'content-type': 'application/json' });
      res.end(nf.body);
    };
    try {
      let vm = await store.getVm(t.id);
      if (!vm || vm.state === 'TERMINATED' || vm.state === 'TERMINATING') return notFound();
      const path = (req.url ?? '/').split('?')[0];
      if (t.port === ENVD_PORT && !(req.method === 'GET' && path === '/health')) {
        // /files takes the token too; E2B's signed URLs need the raw token, which is kept only hashed.
        const token = header(req.headers, 'x-access-token');
        if (!(await e2b.access.checkEnvdToken(t.id, token))) {
          const body = JSON.stringify({ code: 401, message: 'invalid or missing X-Access-Token' });
          res.writeHead(401, { 'content-type': 'application/json' });
          return void res.end(body);
        }
      }
      if (vm.state !== 'RUNNING') {
        if (!(await e2b.access.autoResume(t.id))) return notFound();
        vm = await lifecycle.wake(t.id);
      }
      const idle = lifecycle.holdActive(t.id);
      res.once('close', idle);
      if (t.port === ENVD_PORT) e2b.envd.handle(t.id, req, res);
      else forward(req, res, authority, vm.id, t.port);
    } catch (err) {
      log(`e2b ${t.port}-${t.id}: ${(err as Error).message}`);
      notFound();
    }
  }

  /** Streams the request to the guest's `port` and its answer back. */
  function forward(
    req: Http2ServerRequest | IncomingMessage,
    res: Http2ServerResponse | import('node:http').ServerResponse,
    authority: string | undefined,
    id: string,
    port: number,
  ): void {
    let upstreamAddr: { host: string; port: number };
    try {
      upstreamAddr = address(id, port);
    } catch (err) {
      return sendError(res, err);
    }
    const up = request({
      ...upstreamAddr,
      method: req.method,
      path: req.url,
      agent: agentFor(id),
      headers: forwardHeaders(req.headers, authority, req.socket),
    });
    up.on('response', (ur) => {
      const headers: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(ur.headers)) if (!HOP.has(k) && v !== undefined) headers[k] = v;
      res.writeHead(ur.statusCode ?? 502, headers);
      // Stream as it comes: SSE and long responses are never buffered.
      (res as { flushHeaders?: () => void }).flushHeaders?.();
      pipeline(ur, res as NodeJS.WritableStream, () => {});
    });
    up.on('error', (err) => {
      if (!res.headersSent) sendError(res, new CellaError('UPSTREAM_FAILED', `the app on port ${port} did not answer: ${err.message}`));
      else res.destroy();
    });
    // A request without a body is sent whole at once (no chunked terminator trailing behind it).
    const hasBody =
      'stream' in req
        ? !req.stream.endAfterHeaders
        : req.headers['content-length'] !== undefined
          ? req.headers['content-length'] !== '0'
          : req.headers['transfer-encoding'] !== undefined;
    if (hasBody) pipeline(req as NodeJS.ReadableStream, up, () => {});
    else up.end();
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    void (async () => {
      if (!offered.includes(WS_MARKER) || (req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
        throw new CellaError('INVALID_ARGUMENT', `WebSocket clients must offer the "${WS_MARKER}" subprotocol`);
      }
      const target = await resolve(req.headers.host, req.headers, offered);
      socket.once('close', target.release);
      const isShellPath = (req.url ?? '').split('?')[0] === SHELL_PATH;
      if (target.claims.kind === 'shell' || isShellPath) {
        if (target.claims.kind !== 'shell' || !isShellPath || !opts.shell) {
          throw new CellaError('ACCESS_DENIED', 'the shell needs a shell token on /shell');
        }
        opts.shell(target.vm, req, socket, head);
        return;
      }
      const upstream = createConnection(address(target.vm.id, target.port));
      const app = offered.filter((p) => p !== WS_MARKER && !p.startsWith(WS_AUTH_PREFIX) && !p.startsWith(WS_PORT_PREFIX));
      const headers = forwardHeaders(req.headers, req.headers.host, req.socket);
      delete headers['sec-websocket-protocol'];
      if (app.length) headers['sec-websocket-protocol'] = app.join(', ');
      let head1 = `${req.method} ${req.url} HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n`;
      for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) head1 += `${k}: ${String(one)}\r\n`;
      upstream.write(`${head1}\r\n`);
      if (head.length) upstream.write(head);
      upstream.once('error', () => socket.destroy());
      // Read the guest's handshake answer; add the marker if it selected nothing, as the contract says.
      let buf = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (buf.length > 16384) upstream.destroy();
          return;
        }
        upstream.removeListener('data', onData);
        let answer = buf.subarray(0, end).toString('latin1');
        if (/^HTTP\/1\.1 101/.test(answer) && !/^sec-websocket-protocol:/im.test(answer)) answer += `\r\nSec-WebSocket-Protocol: ${WS_MARKER}`;
        socket.write(`${answer}\r\n\r\n`);
        socket.write(buf.subarray(end + 4));
        upstream.pipe(socket as NodeJS.WritableStream);
        (socket as NodeJS.ReadableStream).pipe(upstream);
      };
      upstream.on('data', onData);
      socket.once('close', () => upstream.destroy());
      upstream.once('close', () => socket.destroy());
    })().catch((err: unknown) => {
      socket.end(rawHttpError(err));
      log(`websocket to ${req.headers.host}: ${(err as Error).message}`);
    });
  }

  const server: Http2SecureServer = createSecureServer({ cert: opts.tls.cert, key: opts.tls.key, allowHTTP1: true }, (req, res) => {
    void onRequest(req, res);
  });
  server.on('upgrade', onUpgrade);
  limitConnections(server, { ...DEFAULT_CONNECTION_LIMITS, ...opts.connections });
  // Headers and body leave as separate writes: without this, Nagle holds the body until the client's delayed ACK (~40 ms).
  server.on('connection', (socket: Socket) => socket.setNoDelay(true));
  server.on('sessionError', () => {});
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      lifecycle.removeListener('state', onState);
      for (const a of agents.values()) a.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open streams and upgraded sockets do not hold the shutdown.
        setTimeout(resolve, 1000).unref();
      });
    },
  };
}

function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function choosePort(fromHeader: string | undefined, subprotocols: string[]): number {
  const raw = fromHeader ?? subprotocols.find((p) => p.startsWith(WS_PORT_PREFIX))?.slice(WS_PORT_PREFIX.length);
  if (raw === undefined) return DEFAULT_ENDPOINT_PORT;
  if (!/^\d{1,5}$/.test(raw) || Number(raw) < 1 || Number(raw) > 65535) throw new CellaError('INVALID_ARGUMENT', `port "${raw}" is not a port number`);
  return Number(raw);
}

/** HTTP needs HTTP_INGRESS or ALL_INGRESS; the shell needs SHELL_INGRESS or ALL_INGRESS. */
export function ingressAllows(connectors: string[], kind: 'http' | 'shell'): boolean {
  const names = connectors.map((a) => a.slice(a.lastIndexOf(':') + 1));
  return names.includes('ALL_INGRESS') || names.includes(kind === 'shell' ? 'SHELL_INGRESS' : 'HTTP_INGRESS');
}

export function portAllowed(ports: PortSpecification[], port: number): boolean {
  return ports.some((p) => ('allPorts' in p ? true : 'port' in p ? p.port === port : port >= p.range.startPort && port <= p.range.endPort));
}

function forwardHeaders(h: IncomingHttpHeaders, authority: string | undefined, socket: Socket | Duplex): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || k.startsWith(':') || HOP.has(k) || k.startsWith(RESERVED)) continue;
    out[k] = v;
  }
  // Tokens never reach the guest, whatever carried them.
  if (typeof out['sec-websocket-protocol'] === 'string') {
    out['sec-websocket-protocol'] = out['sec-websocket-protocol']
      .split(',')
      .map((s) => s.trim())
      .filter((s) => !s.startsWith(WS_AUTH_PREFIX))
      .join(', ');
  }
  if (authority) out.host = authority;
  const remote = (socket as Socket).remoteAddress;
  if (remote) out['x-forwarded-for'] = h['x-forwarded-for'] ? `${String(h['x-forwarded-for'])}, ${remote}` : remote;
  out['x-forwarded-proto'] = 'https';
  return out;
}

/** Statuses come from the one error table (src/errors): 400 malformed, 403 token/port/ingress, 409 suspended without auto-resume, 429 limit, 502 app or resume. */
function sendError(res: Http2ServerResponse | import('node:http').ServerResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  const { status, headers, body } = httpError(err);
  res.writeHead(status, headers);
  res.end(body);
}
