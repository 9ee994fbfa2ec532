/**
 * The per-VM HTTPS endpoints: `https://<vm-id>.<domain>` → the VM's port,
 * as in section 6 of the contract. TLS towards clients (HTTP/2 by ALPN,
 * HTTP/1.1 otherwise, WebSocket over HTTP/1.1), plain HTTP/1.1 towards the
 * guest (upstream.ts). E2B sandbox hosts are e2b.ts's.
 *
 * Each request: resolve the VM from the host name → check the token
 * (decrypts, not expired, this VM, not revoked) → choose the port (header,
 * then WebSocket subprotocol, then 8080) and check it against the token →
 * wake the VM (auto-resume) → forward, streaming both ways. Every request
 * and open stream holds the VM active for the idle policy.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  AUTH_HEADER,
  CellaError,
  DEFAULT_ENDPOINT_PORT,
  isCellaError,
  PORT_HEADER,
  type PortSpecification,
  rawHttpError,
  SHELL_PATH,
  WS_AUTH_PREFIX,
  WS_MARKER,
  WS_PORT_PREFIX,
} from '../contract/index.js';
import type { EndpointTokenClaims, TokenMinter } from '../auth/index.js';
import type { EnvdAccess, EnvdHandler } from '../e2b/index.js';
import { TokenBuckets } from '../limits/index.js';
import type { Lifecycle } from '../lifecycle/index.js';
import type { Store, VmRecord } from '../store/index.js';
import type { TlsMaterial } from '../tls/index.js';
import { DEFAULT_CONNECTION_LIMITS, limitConnections, type ConnectionLimits } from './connections.js';
import { e2bHosts } from './e2b.js';
import { forwardHeaders, sendError, Upstreams, type GuestAddresses, type ProxyRequest, type ProxyResponse } from './upstream.js';

export type { ConnectionLimits } from './connections.js';

// Node gives header names in lower case.
const AUTH = AUTH_HEADER.toLowerCase();
const PORT = PORT_HEADER.toLowerCase();
const TOKEN_CACHE = 10_000;
const DEFAULT_RPS_PER_VCPU = 100;

export interface ProxyOptions {
  store: Store;
  lifecycle: Lifecycle;
  /** The running VMs' guest addresses (the engine). */
  engine: GuestAddresses;
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
   * envd, other ports to the guest (e2b.ts).
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
  const upstreams = new Upstreams(opts.engine);
  const sandboxes = opts.e2b && e2bHosts({ domain, store, lifecycle, ...opts.e2b, upstreams, log });
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
    if (rec.state !== 'RUNNING') upstreams.drop(rec.id);
  };
  lifecycle.on('state', onState);

  /** Everything up to the guest's address; throws CellaErrors that map to the contract's proxy errors. */
  async function resolve(hostHeader: string | undefined, headers: IncomingHttpHeaders, subprotocols: string[]): Promise<Target & { release: () => void }> {
    const host = (hostHeader ?? '').replace(/:\d+$/, '').toLowerCase();
    if (!host.endsWith(suffix) || host.length === suffix.length)
      throw new CellaError('INVALID_ARGUMENT', `${host || 'no host'} is not an endpoint of ${domain}`);
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

  async function onRequest(req: ProxyRequest, res: ProxyResponse): Promise<void> {
    const authority = (req.headers[':authority'] as string | undefined) ?? req.headers.host;
    const sandbox = sandboxes?.target(authority, req.headers);
    if (sandbox) return sandboxes!.request(sandbox, authority, req, res);
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
    upstreams.http(req, res, target.vm.id, target.port, endpointHeaders(req.headers, authority, req.socket));
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const sandbox = sandboxes?.target(req.headers.host, req.headers);
    if (sandbox) return void sandboxes!.upgrade(sandbox, req, socket, head);
    const offered = (req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
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
      const app = offered.filter((p) => p !== WS_MARKER && !p.startsWith(WS_AUTH_PREFIX) && !p.startsWith(WS_PORT_PREFIX));
      const headers = endpointHeaders(req.headers, req.headers.host, req.socket);
      delete headers['sec-websocket-protocol'];
      if (app.length) headers['sec-websocket-protocol'] = app.join(', ');
      // The guest selected no subprotocol: the marker is, as the contract says.
      upstreams.websocket(req, socket, head, target.vm.id, target.port, headers, (answer) =>
        /^HTTP\/1\.1 101/.test(answer) && !/^sec-websocket-protocol:/im.test(answer) ? `${answer}\r\nSec-WebSocket-Protocol: ${WS_MARKER}` : answer,
      );
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
  // Every client connection, so that close() ends them: an HTTP/2 session or a kept-alive socket would
  // otherwise outlive the proxy (and keep a process that embeds cellad, such as a test, from exiting).
  const open = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    socket.setNoDelay(true);
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });
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
      upstreams.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open streams and upgraded sockets do not hold the shutdown: they end with it.
        for (const socket of open) socket.destroy();
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

/** What a Cella endpoint's request takes to the guest: tokens never reach it, whatever carried them. */
function endpointHeaders(h: IncomingHttpHeaders, authority: string | undefined, socket: Socket | Duplex): ReturnType<typeof forwardHeaders> {
  const out = forwardHeaders(h, authority, socket);
  if (typeof out['sec-websocket-protocol'] === 'string') {
    out['sec-websocket-protocol'] = out['sec-websocket-protocol']
      .split(',')
      .map((s) => s.trim())
      .filter((s) => !s.startsWith(WS_AUTH_PREFIX))
      .join(', ');
  }
  return out;
}
