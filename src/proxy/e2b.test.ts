/**
 * E2B sandbox hosts without VMs: e2bHosts behind a plain HTTP server, an
 * app on 127.0.0.1 standing for the guest's port, a store with one running
 * and one paused sandbox. Routing by host and by E2B's headers, the traffic
 * token of a restricted sandbox (HTTP and WebSocket), tokens kept from the
 * app, envd's access token and signed URLs, and the 502 JSON of a sandbox
 * that is not there.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { fileSignature, type EnvdAccess, type EnvdHandler } from '../e2b/index.js';
import type { Lifecycle } from '../lifecycle/index.js';
import type { Store, VmRecord } from '../store/index.js';
import { e2bHosts, TRAFFIC_TOKEN_HEADER } from './e2b.js';
import { Upstreams, type GuestAddresses } from './upstream.js';

const T = { timeout: 10_000 };
const DOMAIN = 'sbx.test';
const ENVD_TOKEN = 'envd-token';
const TRAFFIC = 'traffic-token';

let app: Server;
let proxy: Server;
let url: string;
let seen: IncomingHttpHeaders[] = [];

const vms: Record<string, Partial<VmRecord>> = {
  'mvm-open': { id: 'mvm-open', state: 'RUNNING' },
  'mvm-closed': { id: 'mvm-closed', state: 'RUNNING' },
  'mvm-paused': { id: 'mvm-paused', state: 'SUSPENDED' },
};
const access: EnvdAccess = {
  checkEnvdToken: async (_id, t) => t === ENVD_TOKEN,
  envdToken: async (id) => (vms[id] ? ENVD_TOKEN : undefined),
  defaults: async () => undefined,
  autoResume: async () => false,
  trafficToken: async (id) => (id === 'mvm-closed' ? TRAFFIC : undefined),
};
const envd: EnvdHandler = {
  handle: (_id, _req, res) => {
    res.writeHead(200);
    res.end('envd');
  },
  abort: () => {},
};

/** A request to `host` through the proxy (the Host header is what routes it). */
async function get(host: string, path = '/', headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; body: string }> {
  const req = request(`${url}${path}`, { method, headers: { ...headers, host } });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  let body = '';
  for await (const chunk of res) body += String(chunk);
  return { status: res.statusCode ?? 0, body };
}

before(async () => {
  app = createServer((req, res) => {
    seen.push(req.headers);
    if (req.url === '/refused') return void res.writeHead(400, "language 'r' is not supported").end();
    res.end(`app ${req.url ?? ''}`);
  });
  const wss = new WebSocketServer({ server: app });
  wss.on('connection', (ws, req) => {
    seen.push(req.headers);
    ws.on('message', (m: Buffer) => ws.send(`echo ${m.toString()}`));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as AddressInfo).port;
  const engine: GuestAddresses = { get: () => ({ address: () => ({ host: '127.0.0.1', port: appPort }) }) };
  const store = { getVm: async (id: string) => vms[id] as VmRecord | undefined } as Pick<Store, 'getVm'>;
  const lifecycle = { holdActive: () => () => {}, wake: async () => Promise.reject(new Error('no waking here')) } as unknown as Pick<
    Lifecycle,
    'wake' | 'holdActive'
  >;
  const hosts = e2bHosts({ domain: DOMAIN, store, lifecycle, access, envd, upstreams: new Upstreams(engine), log: () => {} });
  proxy = createServer((req, res) => {
    const t = hosts.target(req.headers.host, req.headers);
    if (!t) return void res.writeHead(421).end();
    void hosts.request(t, req.headers.host, req, res);
  });
  proxy.on('upgrade', (req, socket, head) => {
    const t = hosts.target(req.headers.host, req.headers);
    if (t) void hosts.upgrade(t, req, socket, head);
    else socket.destroy();
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

after(() => {
  for (const s of [proxy, app]) {
    s.closeAllConnections();
    s.close();
  }
});

describe('E2B sandbox hosts', () => {
  test('routing: <port>-<id>.<domain>, or the bare domain with E2b-Sandbox-Id/Port; others are not E2B hosts', T, async () => {
    assert.deepEqual(await get(`8080-mvm-open.${DOMAIN}`, '/x'), { status: 200, body: 'app /x' });
    assert.deepEqual(await get(DOMAIN, '/y', { 'e2b-sandbox-id': 'mvm-open', 'e2b-sandbox-port': '3000' }), { status: 200, body: 'app /y' });
    assert.equal((await get(`mvm-open.${DOMAIN}`)).status, 421);
    assert.equal((await get(`70000-mvm-open.${DOMAIN}`)).status, 421);
  });

  test("the app's status and reason phrase come back as it sent them", T, async () => {
    const req = request(`${url}/refused`, { headers: { host: `8080-mvm-open.${DOMAIN}` } });
    req.end();
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    res.resume();
    assert.deepEqual([res.statusCode, res.statusMessage], [400, "language 'r' is not supported"]);
  });

  test('a missing or paused sandbox (no autoResume) is the 502 JSON the SDK expects', T, async () => {
    for (const id of ['mvm-gone', 'mvm-paused']) {
      const r = await get(`8080-${id}.${DOMAIN}`);
      assert.equal(r.status, 502);
      assert.deepEqual(JSON.parse(r.body), { message: 'The sandbox was not found', sandboxId: id, code: 502 });
    }
  });

  test('restricted public traffic: the traffic token opens the port, nothing else does; tokens never reach the app', T, async () => {
    seen = [];
    assert.equal((await get(`8080-mvm-closed.${DOMAIN}`)).status, 403);
    assert.equal((await get(`8080-mvm-closed.${DOMAIN}`, '/', { [TRAFFIC_TOKEN_HEADER]: 'wrong' })).status, 403);
    assert.equal(seen.length, 0);
    const ok = await get(`8080-mvm-closed.${DOMAIN}`, '/in', { [TRAFFIC_TOKEN_HEADER]: TRAFFIC, 'x-access-token': ENVD_TOKEN, 'x-app': 'kept' });
    assert.deepEqual(ok, { status: 200, body: 'app /in' });
    assert.equal(seen[0]?.[TRAFFIC_TOKEN_HEADER], undefined);
    assert.equal(seen[0]?.['x-access-token'], undefined);
    assert.equal(seen[0]?.['x-app'], 'kept');
    // A public sandbox's ports need no token.
    assert.equal((await get(`8080-mvm-open.${DOMAIN}`)).status, 200);
  });

  test('WebSockets reach the guest port; a restricted sandbox needs its traffic token for them too', T, async () => {
    const talk = (host: string, headers: Record<string, string> = {}): Promise<string> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`, { headers: { ...headers, host } });
        ws.once('open', () => ws.send('hi'));
        ws.once('message', (m: Buffer) => {
          resolve(m.toString());
          ws.close();
        });
        ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)));
        ws.once('error', reject);
      });
    assert.equal(await talk(`8080-mvm-open.${DOMAIN}`), 'echo hi');
    await assert.rejects(talk(`8080-mvm-closed.${DOMAIN}`), /status 403/);
    assert.equal(await talk(`8080-mvm-closed.${DOMAIN}`, { [TRAFFIC_TOKEN_HEADER]: TRAFFIC }), 'echo hi');
    await assert.rejects(talk(`8080-mvm-gone.${DOMAIN}`), /status 502/);
  });

  test('envd: the access token, or a signed /files URL; /health is open', T, async () => {
    const host = `49983-mvm-open.${DOMAIN}`;
    assert.equal((await get(host, '/health')).status, 200);
    assert.equal((await get(host, '/process.Process/List', {}, 'POST')).status, 401);
    assert.equal((await get(host, '/process.Process/List', { 'x-access-token': 'wrong' }, 'POST')).status, 401);
    assert.deepEqual(await get(host, '/process.Process/List', { 'x-access-token': ENVD_TOKEN }, 'POST'), { status: 200, body: 'envd' });
    const sig = fileSignature('a.txt', 'read', 'user', ENVD_TOKEN);
    assert.equal((await get(host, `/files?path=a.txt&username=user&signature=${sig}`)).status, 200);
    assert.equal((await get(host, `/files?path=a.txt&username=root&signature=${sig}`)).status, 401);
    // A signed URL opens /files only.
    assert.equal((await get(host, `/envs?path=a.txt&username=user&signature=${sig}`)).status, 401);
  });
});
