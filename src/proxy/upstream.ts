/**
 * The proxy's way to a guest's port: plain HTTP/1.1 through the VM's
 * namespace address with a keep-alive pool per VM, and WebSocket upgrades
 * relayed as bytes once the guest answered its handshake. Used by the
 * Cella endpoints and the E2B sandbox hosts alike.
 */
import { Agent, request, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { createConnection, type Socket } from 'node:net';
import { pipeline, type Duplex } from 'node:stream';
import { CellaError, httpError, RESERVED_HEADER_PREFIX } from '../contract/index.js';

export type ProxyRequest = Http2ServerRequest | IncomingMessage;
export type ProxyResponse = Http2ServerResponse | ServerResponse;

const RESERVED = RESERVED_HEADER_PREFIX.toLowerCase();
/** Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy; HTTP/2 pseudo-headers neither (checked apart). */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings', 'host']);
/** A guest's WebSocket handshake answer larger than this is not one. */
const HANDSHAKE_MAX = 16384;

/** The headers a request takes to the guest: no hop-by-hop, no Cella-reserved, none named in `drop`; the forwarding headers added. */
export function forwardHeaders(
  h: IncomingHttpHeaders,
  authority: string | undefined,
  socket: Socket | Duplex,
  drop: ReadonlySet<string> = new Set(),
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || k.startsWith(':') || HOP.has(k) || k.startsWith(RESERVED) || drop.has(k)) continue;
    out[k] = v;
  }
  if (authority) out.host = authority;
  const remote = (socket as Socket).remoteAddress;
  if (remote) out['x-forwarded-for'] = h['x-forwarded-for'] ? `${String(h['x-forwarded-for'])}, ${remote}` : remote;
  out['x-forwarded-proto'] = 'https';
  return out;
}

/** Statuses come from the one error table (src/errors): 400 malformed, 403 token/port/ingress, 409 suspended without auto-resume, 429 limit, 502 app or resume. */
export function sendError(res: ProxyResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  const { status, headers, body } = httpError(err);
  res.writeHead(status, headers);
  res.end(body);
}

/** Where a running VM's guest ports are reached (the engine's running VMs; in tests, a local stand-in). */
export interface GuestAddresses {
  get(id: string): { address(port: number): { host: string; port: number } } | undefined;
}

export class Upstreams {
  private readonly agents = new Map<string, Agent>();

  constructor(private readonly engine: GuestAddresses) {}

  /** The guest address of VM `id`'s `port`; UPSTREAM_FAILED when it does not run here. */
  address(id: string, port: number): { host: string; port: number } {
    const vm = this.engine.get(id);
    if (!vm) throw new CellaError('UPSTREAM_FAILED', 'the MicroVM is not running');
    return vm.address(port);
  }

  /** The VM stopped running: its pooled connections go with it. */
  drop(id: string): void {
    this.agents.get(id)?.destroy();
    this.agents.delete(id);
  }

  close(): void {
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
  }

  private agentFor(id: string): Agent {
    let a = this.agents.get(id);
    if (!a) this.agents.set(id, (a = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 16, keepAliveMsecs: 1000 })));
    return a;
  }

  /** Streams the request to the guest's `port` and its answer back. */
  http(req: ProxyRequest, res: ProxyResponse, id: string, port: number, headers: OutgoingHttpHeaders): void {
    let upstreamAddr: { host: string; port: number };
    try {
      upstreamAddr = this.address(id, port);
    } catch (err) {
      return sendError(res, err);
    }
    const up = request({ ...upstreamAddr, method: req.method, path: req.url, agent: this.agentFor(id), headers });
    up.on('response', (ur) => {
      const back: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(ur.headers)) if (!HOP.has(k) && v !== undefined) back[k] = v;
      // The reason phrase too (HTTP/1.1 only): some clients, E2B's code-interpreter SDK among them, show only it.
      if (res instanceof ServerResponse && ur.statusMessage) res.writeHead(ur.statusCode ?? 502, ur.statusMessage, back);
      else res.writeHead(ur.statusCode ?? 502, back);
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

  /**
   * Relays a WebSocket upgrade to the guest's `port`: the handshake with
   * `headers`, the guest's answer through `answer` (which may add to it),
   * then bytes both ways until either side closes.
   */
  websocket(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    id: string,
    port: number,
    headers: OutgoingHttpHeaders,
    answer: (raw: string) => string = (a) => a,
  ): void {
    const upstream = createConnection(this.address(id, port));
    let head1 = `${req.method} ${req.url} HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n`;
    for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) head1 += `${k}: ${String(one)}\r\n`;
    upstream.write(`${head1}\r\n`);
    if (head.length) upstream.write(head);
    upstream.once('error', () => socket.destroy());
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > HANDSHAKE_MAX) upstream.destroy();
        return;
      }
      upstream.removeListener('data', onData);
      socket.write(`${answer(buf.subarray(0, end).toString('latin1'))}\r\n\r\n`);
      socket.write(buf.subarray(end + 4));
      upstream.pipe(socket as NodeJS.WritableStream);
      (socket as NodeJS.ReadableStream).pipe(upstream);
    };
    upstream.on('data', onData);
    socket.once('close', () => upstream.destroy());
    upstream.once('close', () => socket.destroy());
  }
}
