/**
 * E2B sandbox hosts on the endpoint proxy: `<port>-<id>.<domain>`, or the
 * bare domain routed by E2b-Sandbox-Id/E2b-Sandbox-Port (E2B_SANDBOX_URL
 * mode). Port 49983 is envd, in process, behind the sandbox's access token
 * or a signed /files URL; other ports (HTTP and WebSocket) go to the guest,
 * public unless the sandbox was made with `allowPublicTraffic: false`, when
 * they need its `e2b-traffic-access-token`. A missing, killed or paused
 * sandbox (without autoResume) is the 502 JSON the SDK reads as "not running".
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { ENVD_PORT, envdAuthProblem, sandboxNotFound, type EnvdAccess, type EnvdHandler } from '../e2b/index.js';
import type { Lifecycle } from '../lifecycle/index.js';
import type { Store, VmRecord } from '../store/index.js';
import { forwardHeaders, type ProxyRequest, type ProxyResponse, type Upstreams } from './upstream.js';

/** The header E2B's proxy takes a sandbox's traffic access token in. */
export const TRAFFIC_TOKEN_HEADER = 'e2b-traffic-access-token';
/** E2B's own tokens stay on this side: the app in the guest never sees them. */
const E2B_TOKENS: ReadonlySet<string> = new Set([TRAFFIC_TOKEN_HEADER, 'x-access-token']);

export interface E2bTarget {
  id: string;
  port: number;
}

export interface E2bHosts {
  /** The sandbox and port a request is for, or undefined when it is not for an E2B sandbox host. */
  target(authority: string | undefined, headers: IncomingHttpHeaders): E2bTarget | undefined;
  request(t: E2bTarget, authority: string | undefined, req: ProxyRequest, res: ProxyResponse): Promise<void>;
  upgrade(t: E2bTarget, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void>;
}

function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A refusal as E2B's proxy and envd word it: JSON `{code, message}` with the status. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body = JSON.stringify({ code: status, message }),
  ) {
    super(message);
  }
}

export function e2bHosts(opts: {
  domain: string;
  store: Pick<Store, 'getVm'>;
  lifecycle: Pick<Lifecycle, 'wake' | 'holdActive'>;
  access: EnvdAccess;
  envd: EnvdHandler;
  upstreams: Upstreams;
  log: (line: string) => void;
}): E2bHosts {
  const { domain, store, lifecycle, access, upstreams } = opts;
  const suffix = `.${domain}`;

  function target(authority: string | undefined, headers: IncomingHttpHeaders): E2bTarget | undefined {
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

  /** The running VM a request may reach (woken if it may be), or the Refusal to answer. */
  async function admit(t: E2bTarget, req: ProxyRequest | IncomingMessage): Promise<VmRecord> {
    const notFound = (): Refusal => {
      const nf = sandboxNotFound(t.id);
      return new Refusal(nf.status, 'The sandbox was not found', nf.body);
    };
    let vm = await store.getVm(t.id);
    if (!vm || vm.state === 'TERMINATED' || vm.state === 'TERMINATING') throw notFound();
    if (t.port === ENVD_PORT) {
      const problem = await envdAuthProblem(access, t.id, req.method ?? 'GET', req.url ?? '/', header(req.headers, 'x-access-token'));
      if (problem) throw new Refusal(401, problem);
    } else {
      const want = await access.trafficToken(t.id);
      const got = header(req.headers, TRAFFIC_TOKEN_HEADER);
      if (want !== undefined && (got === undefined || !same(got, want)))
        throw new Refusal(403, `sandbox ${t.id} takes traffic with its traffic access token only: send it as ${TRAFFIC_TOKEN_HEADER}`);
    }
    if (vm.state !== 'RUNNING') {
      if (!(await access.autoResume(t.id))) throw notFound();
      vm = await lifecycle.wake(t.id);
    }
    return vm;
  }

  async function request(t: E2bTarget, authority: string | undefined, req: ProxyRequest, res: ProxyResponse): Promise<void> {
    try {
      const vm = await admit(t, req);
      const idle = lifecycle.holdActive(t.id);
      res.once('close', idle);
      if (t.port === ENVD_PORT) opts.envd.handle(t.id, req, res);
      else upstreams.http(req, res, vm.id, t.port, forwardHeaders(req.headers, authority, req.socket, E2B_TOKENS));
    } catch (err) {
      const r = err instanceof Refusal ? err : new Refusal(502, (err as Error).message, sandboxNotFound(t.id).body);
      if (!(err instanceof Refusal)) opts.log(`e2b ${t.port}-${t.id}: ${r.message}`);
      if (res.headersSent) return void res.destroy();
      res.writeHead(r.status, { 'content-type': 'application/json' });
      res.end(r.body);
    }
  }

  async function upgrade(t: E2bTarget, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    try {
      if (t.port === ENVD_PORT) throw new Refusal(400, 'envd takes no WebSocket');
      const vm = await admit(t, req);
      socket.once('close', lifecycle.holdActive(t.id));
      const headers = forwardHeaders(req.headers, req.headers.host, req.socket, E2B_TOKENS);
      upstreams.websocket(req, socket, head, vm.id, t.port, headers);
    } catch (err) {
      const r = err instanceof Refusal ? err : new Refusal(502, (err as Error).message, sandboxNotFound(t.id).body);
      socket.end(
        `HTTP/1.1 ${r.status} ${r.status === 502 ? 'Bad Gateway' : 'Refused'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(r.body)}\r\nconnection: close\r\n\r\n${r.body}`,
      );
    }
  }

  return { target, request, upgrade };
}
