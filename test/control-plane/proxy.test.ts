/**
 * The endpoint proxy without a VM: the real proxy (real TLS, tokens, store
 * and lifecycle, on the control-plane harness) in front of a Node app on
 * port 0 that stands for the guest's port 8080 (test/fixtures/app-upstream.ts).
 * Tokens and ports, headers, HTTP/2, large bodies, SSE, WebSocket, and the
 * idle policy's view of traffic. What needs a guest (auto-resume from a real
 * checkpoint, the shell's PTY, the guest's own signals) stays in
 * test/proxy.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import type WebSocket from 'ws';
import { TokenMinter } from '../../src/auth/index.js';
import { localhostLookup } from '../../src/cli/index.js';
import { Arns } from '../../src/contract/index.js';
import { startProxy, type EndpointProxy } from '../../src/proxy/index.js';
import { loadTls } from '../../src/tls/index.js';
import type { MicrovmBody } from '../fixtures/api.js';
import { startAppUpstream, type AppUpstream } from '../fixtures/app-upstream.js';
import { endpointRequest, endpointWebSocket, opened, type Endpoint, type EndpointReply } from '../fixtures/endpoint-client.js';
import { V, startHarness, type Harness } from '../fixtures/harness.js';

const DOMAIN = 'cella.localhost';
const APP_PORT = 8080;
/** Nothing listens on port 1 of loopback: a guest port without an app. */
const NO_APP = { host: '127.0.0.1', port: 1 };
const T = { timeout: 20_000 };
const ARNS = new Arns();

describe('endpoint proxy (no VM)', { concurrency: false }, () => {
  let h: Harness;
  let app: AppUpstream;
  let proxy: EndpointProxy;
  let ca: Buffer;

  const host = (id: string): string => `${id}.${DOMAIN}`;

  before(async () => {
    h = await startHarness();
    app = await startAppUpstream();
    const tls = await loadTls(h.dataDir, DOMAIN);
    ca = readFileSync(tls.caFile as string);
    // The guest address of a VM the driver runs: the app for port 8080, nothing on other ports.
    const engine = { get: (id: string) => (h.driver.get(id) ? { address: (port: number) => (port === APP_PORT ? app.address : NO_APP) } : undefined) };
    proxy = await startProxy({ store: h.store, lifecycle: h.lifecycle, engine, tokens: await TokenMinter.open(h.store), tls, domain: DOMAIN, port: 0 });
  });
  after(async () => {
    await proxy.close();
    await app.close();
    await h.close();
  });

  const endpoint = (): Endpoint => ({ port: proxy.port, ca });
  const get = (id: string, p: string, headers: Record<string, string> = {}, method = 'GET', body?: Buffer): Promise<EndpointReply> =>
    endpointRequest(endpoint(), host(id), p, headers, method, body);

  const token = async (id: string, allowedPorts: unknown[] = [{ port: APP_PORT }]): Promise<string> => {
    const r = await h.api<{ authToken: Record<string, string> }>('POST', `${V}/microvms/${id}/auth-token`, { expirationInMinutes: 5, allowedPorts });
    assert.equal(r.status, 200, r.text);
    return r.body.authToken['X-aws-proxy-auth'] as string;
  };

  const launch = async (body: Record<string, unknown> = {}): Promise<string> => {
    const r = await h.api<MicrovmBody>('POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
    assert.equal(r.status, 200, r.text);
    await h.waitState(r.body.microvmId, ['RUNNING']);
    return r.body.microvmId;
  };
  const terminate = async (...ids: string[]): Promise<void> => {
    for (const id of ids) assert.equal((await h.api('DELETE', `${V}/microvms/${id}`)).status, 200);
    for (const id of ids) await h.waitState(id, ['TERMINATED']);
  };

  const wsTo = (id: string, p: string, protocols: string[]): WebSocket => endpointWebSocket(endpoint(), host(id), p, protocols);

  test('a valid token reaches the app over TLS signed by the proxy CA', T, async () => {
    const id = await launch();
    const r = await get(id, '/inc', { 'x-aws-proxy-auth': await token(id) });
    assert.equal(r.status, 200);
    assert.equal(r.text, '1');
    await terminate(id);
  });

  test('wrong VM, port out of scope, expired, forged or missing tokens → 403 and nothing reaches the app', T, async () => {
    const a = await launch();
    const b = await launch();
    const tb = await token(b);
    const ta = await token(a, [{ port: 9000 }]);
    const minter = await TokenMinter.open(h.store);
    const expired = await minter.mint(a, 'http', [{ port: APP_PORT }], -1);
    await h.store.putToken({ jti: expired.jti, vmId: a, kind: 'http', ports: '[]', expiresAt: expired.expiresAt, createdAt: Date.now() });
    const forged = tb.slice(0, -4) + (tb.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const cases: Array<[Record<string, string>, string]> = [
      [{ 'x-aws-proxy-auth': tb }, 'token of another VM'],
      [{ 'x-aws-proxy-auth': ta }, 'port 8080 not in scope'],
      [{ 'x-aws-proxy-auth': ta, 'x-aws-proxy-port': '8080' }, 'port header outside scope'],
      [{ 'x-aws-proxy-auth': expired.token }, 'expired'],
      [{ 'x-aws-proxy-auth': forged }, 'forged'],
      [{ 'x-aws-proxy-auth': 'not-a-token' }, 'garbage'],
      [{}, 'missing'],
    ];
    const before = app.requests.length;
    for (const [headers, what] of cases) {
      const r = await get(a, '/inc', headers);
      assert.equal(r.status, 403, what);
      assert.equal((JSON.parse(r.text) as { code: string }).code, 'ACCESS_DENIED', what);
    }
    assert.equal((await get(a, '/inc', { 'x-aws-proxy-auth': ta, 'x-aws-proxy-port': 'abc' })).status, 400);
    assert.equal(app.requests.length, before, 'no refused request reached the app');
    // A port inside a range, and allPorts, pass the check (nothing listens on 9005: 502).
    const range = await token(a, [{ range: { startPort: 9000, endPort: 9010 } }]);
    assert.equal((await get(a, '/', { 'x-aws-proxy-auth': range, 'x-aws-proxy-port': '9005' })).status, 502);
    const all = await token(a, [{ allPorts: {} }]);
    assert.equal((await get(a, '/inc', { 'x-aws-proxy-auth': all, 'x-aws-proxy-port': '8080' })).text, '1');
    await terminate(a, b);
  });

  test('after termination the token is refused', T, async () => {
    const id = await launch();
    const t = await token(id);
    assert.equal((await get(id, '/', { 'x-aws-proxy-auth': t })).status, 200);
    await terminate(id);
    assert.equal((await get(id, '/', { 'x-aws-proxy-auth': t })).status, 403);
  });

  test('HTTP/2 by ALPN, and large bodies both ways over HTTP/2 and HTTP/1.1', T, async () => {
    const id = await launch();
    const t = await token(id);
    const big = randomBytes(3 << 20);
    const session = h2connect(`https://${host(id)}:${proxy.port}`, { ca, lookup: localhostLookup });
    try {
      const h2 = (p: string, method: string, body?: Buffer): Promise<{ status: number; body: Buffer }> =>
        new Promise((resolve, reject) => {
          const s = session.request({ ':path': p, ':method': method, 'x-aws-proxy-auth': t });
          const chunks: Buffer[] = [];
          let status = 0;
          s.on('response', (hd) => (status = Number(hd[':status'])));
          s.on('data', (c: Buffer) => chunks.push(c));
          s.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
          s.on('error', reject);
          s.end(body);
        });
      const inc = await h2('/inc', 'GET');
      assert.equal(inc.status, 200);
      assert.equal(inc.body.toString(), '1');
      assert.equal(session.alpnProtocol, 'h2');
      const echoed = await h2('/echo', 'POST', big);
      assert.equal(echoed.status, 200);
      assert.ok(echoed.body.equals(big), 'a 3 MiB body came back whole over HTTP/2');
    } finally {
      session.close();
    }
    const r = await get(id, '/echo', { 'x-aws-proxy-auth': t, 'content-length': String(big.length) }, 'POST', big);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(big), 'a 3 MiB body came back whole over HTTP/1.1');
    await terminate(id);
  });

  test('reserved headers are stripped; the app sees the endpoint host and forwarding headers', T, async () => {
    const id = await launch();
    const t = await token(id, [{ allPorts: {} }]);
    const r = await get(id, '/headers', { 'x-aws-proxy-auth': t, 'x-aws-proxy-port': '8080', 'x-aws-proxy-force-h2': 'false', 'x-custom': 'kept' });
    assert.equal(r.status, 200);
    const seen = r.text.toLowerCase();
    assert.doesNotMatch(seen, /x-aws-proxy/);
    assert.match(seen, /x-custom: kept/);
    assert.match(seen, new RegExp(`host: ${host(id)}`));
    assert.match(seen, /x-forwarded-proto: https/);
    assert.match(seen, /x-forwarded-for: 127\.0\.0\.1/);
    await terminate(id);
  });

  test('server-sent events stream through without buffering', T, async () => {
    const id = await launch();
    const t = await token(id);
    const arrivals: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = httpsRequest(
        { host: '127.0.0.1', port: proxy.port, servername: host(id), path: '/sse/5', ca, agent: false, headers: { host: host(id), 'x-aws-proxy-auth': t } },
        (res) => {
          assert.equal(res.headers['content-type'], 'text/event-stream');
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            for (const _ of c.matchAll(/data: \d+\n\n/g)) arrivals.push(Date.now());
          });
          res.on('end', () => resolve());
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal(arrivals.length, 5);
    // Events sent 100 ms apart arrive apart: the proxy did not hold them until the end.
    assert.ok((arrivals[4] as number) > (arrivals[0] as number), 'events arrived over time, not at once');
    await terminate(id);
  });

  test('WebSocket echo with the contract subprotocols; the auth subprotocol never reaches the app', T, async () => {
    const id = await launch();
    const t = await token(id);
    const ws = await opened(wsTo(id, '/ws', ['lambda-microvms', `lambda-microvms.authentication.${t}`, 'lambda-microvms.port.8080', 'chat']));
    assert.equal(ws.protocol, 'chat');
    const echo = (msg: string | Buffer): Promise<string | Buffer> =>
      new Promise((resolve) => {
        // binaryType is 'nodebuffer' (the default): every message arrives as one Buffer.
        ws.once('message', (data, binary) => resolve(binary ? (data as Buffer) : (data as Buffer).toString()));
        ws.send(msg);
      });
    assert.equal(await echo('hello'), 'hello');
    const big = Buffer.alloc(70_000, 7);
    assert.deepEqual(await echo(big), big);
    ws.close();
    await new Promise((r) => ws.once('close', r));

    // Only the marker: the proxy echoes it, since the app selected none.
    const ws2 = await opened(wsTo(id, '/ws', ['lambda-microvms', `lambda-microvms.authentication.${t}`]));
    assert.equal(ws2.protocol, 'lambda-microvms');
    ws2.close();

    const upgrades = app.requests.filter((p) => p === '/ws').length;
    const denied = wsTo(id, '/ws', ['lambda-microvms', 'lambda-microvms.authentication.forged']);
    const status = await new Promise<number>((resolve) => {
      denied.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      denied.once('error', () => resolve(-1));
    });
    assert.equal(status, 403);
    assert.equal(app.requests.filter((p) => p === '/ws').length, upgrades, 'the refused upgrade never reached the app');
    await terminate(id);
  });

  test('a shell token opens no HTTP; a VM without HTTP_INGRESS gets no HTTP', T, async () => {
    const id = await launch({ ingressNetworkConnectors: [ARNS.managedConnector('SHELL_INGRESS')] });
    const r = await h.api<{ authToken: Record<string, string> }>('POST', `${V}/microvms/${id}/shell-auth-token`, { expirationInMinutes: 5 });
    assert.equal(r.status, 200, r.text);
    assert.equal((await get(id, '/', { 'x-aws-proxy-auth': r.body.authToken['X-aws-proxy-auth'] as string })).status, 502);
    assert.equal((await get(id, '/', { 'x-aws-proxy-auth': await token(id) })).status, 403);
    await terminate(id);
  });

  test('a suspended VM without auto-resume answers a clear error and stays suspended', T, async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: false } });
    const t = await token(id);
    await h.waitState(id, ['SUSPENDED']);
    const r = await get(id, '/', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 409);
    assert.match(r.text, /does not allow auto-resume/);
    assert.equal((await h.api<MicrovmBody>('GET', `${V}/microvms/${id}`)).body.state, 'SUSPENDED');
    assert.equal(h.driver.resumes, 0);
    await terminate(id);
  });

  test('traffic through the proxy keeps a VM from idling out; once it stops, the VM suspends', T, async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 2, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const t = await token(id);
    // Longer than the idle time, a request every 200 ms (2 s of idle leaves room for slow requests on a loaded host).
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      assert.equal((await get(id, '/', { 'x-aws-proxy-auth': t })).status, 200);
      assert.equal((await h.store.getVm(id))?.state, 'RUNNING');
      await new Promise((r) => setTimeout(r, 200));
    }
    await h.waitState(id, ['SUSPENDED']);
    await terminate(id);
  });
});
