/**
 * The endpoint proxy against a real cellad, real VMs and real TLS: tokens,
 * ports, headers, HTTP/2, WebSocket, SSE, auto-resume.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { connect as h2connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { Arns } from '../src/contract/index.js';
import { TokenMinter } from '../src/auth/index.js';
import { localhostLookup } from '../src/cli/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, V, api, createImage, shutdown, waitState, type MicrovmBody } from './control-helpers.js';
import { eventually, getAt, tempDataDir } from './helpers.js';

/** The ARNs of a server started with the default region and account. */
const ARNS = new Arns();

interface Got {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

describe('endpoint proxy', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let base: string;
  let ca: Buffer;

  const host = (id: string): string => `${id}.${server.domain}`;

  /** HTTPS to the endpoint; *.localhost is dialled at 127.0.0.1 with the endpoint's name for SNI and Host. */
  const get = (id: string, p: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Got> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: server.proxyPort,
          servername: host(id),
          path: p,
          method,
          ca,
          agent: false,
          headers: { host: `${host(id)}:${server.proxyPort}`, ...headers },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        },
      );
      req.on('error', reject);
      req.end();
    });

  const token = async (id: string, allowedPorts: unknown[] = [{ port: 8080 }], minutes = 5): Promise<string> => {
    const r = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/auth-token`, { expirationInMinutes: minutes, allowedPorts });
    assert.equal(r.status, 200, r.text);
    return r.body.authToken['X-aws-proxy-auth'] as string;
  };

  const wsTo = (id: string, p: string, protocols: string[]): WebSocket =>
    new WebSocket(`wss://${host(id)}:${server.proxyPort}${p}`, protocols, { ca, lookup: localhostLookup });
  const opened = (ws: WebSocket): Promise<WebSocket> =>
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });

  const launch = async (body: Record<string, unknown> = {}): Promise<string> => {
    const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
    assert.equal(r.status, 200, r.text);
    await waitState(base, r.body.microvmId, ['RUNNING']);
    return r.body.microvmId;
  };

  /** The demo app's counter, read directly (not through the proxy). */
  const counter = async (id: string): Promise<string> => (await getAt(server.engine.get(id)?.address(8080) as { host: string; port: number }, '/get')).body;

  before(async () => {
    dir = tempDataDir('proxy');
    // No resume window: auto-resume here always restores from the checkpoint (the window is covered by the engine's tests).
    server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, resumeWindowSeconds: 0, log: () => {} });
    base = server.url;
    ca = readFileSync(server.caFile as string);
    const { build, log } = await createImage(base, 'demo');
    assert.equal(build.buildState, 'SUCCESSFUL', log);
  });

  after(async () => {
    await shutdown(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a valid token reaches the app over TLS signed by the CA `cella ca` names', async () => {
    const id = await launch();
    const t = await token(id);
    const r = await get(id, '/inc', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 200);
    assert.equal(r.body, '1');
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('wrong VM, port out of scope, expired, forged or missing tokens → 403 and nothing reaches the guest', async () => {
    const a = await launch();
    const b = await launch();
    const tb = await token(b);
    const ta = await token(a, [{ port: 9000 }]);
    const minter = await TokenMinter.open(server.store);
    const expired = await minter.mint(a, 'http', [{ port: 8080 }], -1);
    await server.store.putToken({ jti: expired.jti, vmId: a, kind: 'http', ports: '[]', expiresAt: expired.expiresAt, createdAt: Date.now() });
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
    for (const [headers, what] of cases) {
      const r = await get(a, '/inc', headers);
      assert.equal(r.status, 403, what);
      assert.equal((JSON.parse(r.body) as { code: string }).code, 'ACCESS_DENIED', what);
    }
    assert.equal((await get(a, '/inc', { 'x-aws-proxy-auth': ta, 'x-aws-proxy-port': 'abc' })).status, 400);
    assert.equal(await counter(a), '0', 'no refused request reached the app');
    // A port inside a range, and allPorts, pass the check (nothing listens on 9005: 502).
    const range = await token(a, [{ range: { startPort: 9000, endPort: 9010 } }]);
    assert.equal((await get(a, '/', { 'x-aws-proxy-auth': range, 'x-aws-proxy-port': '9005' })).status, 502);
    const all = await token(a, [{ allPorts: {} }]);
    assert.equal((await get(a, '/inc', { 'x-aws-proxy-auth': all, 'x-aws-proxy-port': '8080' })).body, '1');
    for (const id of [a, b]) await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('after termination the token is refused', async () => {
    const id = await launch();
    const t = await token(id);
    assert.equal((await get(id, '/', { 'x-aws-proxy-auth': t })).status, 200);
    await api(base, 'DELETE', `${V}/microvms/${id}`);
    await waitState(base, id, ['TERMINATED']);
    const r = await get(id, '/', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 403);
  });

  test('HTTP/2 by ALPN', async () => {
    const id = await launch();
    const t = await token(id);
    const session = h2connect(`https://${host(id)}:${server.proxyPort}`, { ca, lookup: localhostLookup });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const s = session.request({ ':path': '/inc', 'x-aws-proxy-auth': t });
        let data = '';
        s.setEncoding('utf8');
        s.on('response', (h) => assert.equal(h[':status'], 200));
        s.on('data', (c: string) => (data += c));
        s.on('end', () => resolve(data));
        s.on('error', reject);
        s.end();
      });
      assert.equal(body, '1');
      assert.equal(session.alpnProtocol, 'h2');
    } finally {
      session.close();
    }
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('a suspended VM with auto-resume: 50 concurrent requests are all served by one resume', async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const t = await token(id);
    assert.equal((await get(id, '/inc', { 'x-aws-proxy-auth': t })).body, '1');
    await waitState(base, id, ['SUSPENDED']);
    let resumes = 0;
    const resume = server.engine.resume.bind(server.engine);
    server.engine.resume = async (...args) => {
      resumes++;
      return resume(...args);
    };
    try {
      const replies = await Promise.all(Array.from({ length: 50 }, () => get(id, '/inc', { 'x-aws-proxy-auth': t })));
      assert.deepEqual(
        replies.map((r) => r.status),
        Array(50).fill(200),
      );
      assert.deepEqual(
        replies.map((r) => Number(r.body)).sort((x, y) => x - y),
        Array.from({ length: 50 }, (_, i) => i + 2),
        'RAM kept: the counter went on from 1',
      );
      assert.equal(resumes, 1);
    } finally {
      server.engine.resume = resume;
    }
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('an auto-resume that fails answers 502 with the reason, and the VM stays suspended', async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const t = await token(id);
    await waitState(base, id, ['SUSPENDED']);
    const checkpoint = path.join(dir, 'vms', id, 'checkpoint');
    truncateSync(checkpoint, Math.floor(statSync(checkpoint).size / 2));
    const r = await get(id, '/', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 502);
    assert.match(r.body, /could not be resumed/);
    const after = await api<MicrovmBody>(base, 'GET', `${V}/microvms/${id}`);
    assert.equal(after.body.state, 'SUSPENDED');
    assert.match(after.body.stateReason ?? '', /resume failed/);
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('a suspended VM without auto-resume answers a clear error and stays suspended', async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: false } });
    const t = await token(id);
    await waitState(base, id, ['SUSPENDED']);
    const r = await get(id, '/', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 409);
    assert.match(r.body, /does not allow auto-resume/);
    assert.equal((await api<MicrovmBody>(base, 'GET', `${V}/microvms/${id}`)).body.state, 'SUSPENDED');
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('traffic through the proxy keeps a VM from idling out', async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 2, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const t = await token(id);
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      assert.equal((await get(id, '/', { 'x-aws-proxy-auth': t })).status, 200);
      assert.equal((await server.store.getVm(id))?.state, 'RUNNING');
      await new Promise((r) => setTimeout(r, 300));
    }
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('reserved headers are stripped; the guest sees the endpoint host and forwarding headers', async () => {
    const id = await launch();
    const t = await token(id, [{ allPorts: {} }]);
    const r = await get(id, '/headers', { 'x-aws-proxy-auth': t, 'x-aws-proxy-port': '8080', 'x-aws-proxy-force-h2': 'false', 'x-custom': 'kept' });
    assert.equal(r.status, 200);
    const seen = r.body.toLowerCase();
    assert.doesNotMatch(seen, /x-aws-proxy/);
    assert.match(seen, /x-custom: kept/);
    assert.match(seen, new RegExp(`host: ${host(id)}`));
    assert.match(seen, /x-forwarded-proto: https/);
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('server-sent events stream through without buffering', async () => {
    const id = await launch();
    const t = await token(id);
    const arrivals: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: server.proxyPort,
          servername: host(id),
          path: '/sse/5',
          ca,
          agent: false,
          headers: { host: host(id), 'x-aws-proxy-auth': t },
        },
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
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('WebSocket echo with the contract subprotocols; the auth subprotocol never reaches the guest', async () => {
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

    // Only the marker: the proxy echoes it, since the guest selected none.
    const ws2 = await opened(wsTo(id, '/ws', ['lambda-microvms', `lambda-microvms.authentication.${t}`]));
    assert.equal(ws2.protocol, 'lambda-microvms');
    ws2.close();

    const denied = wsTo(id, '/ws', ['lambda-microvms', 'lambda-microvms.authentication.forged']);
    const status = await new Promise<number>((resolve) => {
      denied.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      denied.once('error', () => resolve(-1));
    });
    assert.equal(status, 403);
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });
  test('shell: a PTY round trip with a resize through wss://<endpoint>/shell; HTTPS with a shell token is 502', async () => {
    const id = await launch({ ingressNetworkConnectors: [ARNS.managedConnector('HTTP_INGRESS'), ARNS.managedConnector('SHELL_INGRESS')] });
    const r = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/shell-auth-token`, { expirationInMinutes: 5 });
    assert.equal(r.status, 200, r.text);
    const shellToken = r.body.authToken['X-aws-proxy-auth'] as string;
    assert.equal((await get(id, '/', { 'x-aws-proxy-auth': shellToken })).status, 502);
    const ws = wsTo(id, '/shell', ['lambda-microvms', `lambda-microvms.authentication.${shellToken}`]);
    let out = '';
    let init: { type?: string; session_id?: string } = {};
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary) out += data.toString();
      else init = JSON.parse(data.toString()) as typeof init;
    });
    await opened(ws);
    const closed = new Promise<[number, string]>((resolve) => ws.once('close', (code, reason) => resolve([code, reason.toString()])));
    // Typed before the terminal is open: kept for it, not lost.
    ws.send(Buffer.from('echo early-$((6*7))\n'));
    await eventually(() => init.type === 'session_init', 15_000, 'session_init');
    await eventually(() => out.includes('early-42'), 15_000, 'early input');
    assert.match(init.session_id ?? '', /^[0-9a-f-]{36}$/);
    ws.send(Buffer.from('stty size\n'));
    await eventually(() => out.includes('24 80'), 15_000, 'first size');
    ws.send(JSON.stringify({ type: 'resize', cols: 100, rows: 30 }));
    ws.send(Buffer.from('stty size\n'));
    await eventually(() => out.includes('30 100'), 15_000, 'size after resize');
    ws.send(Buffer.from('exit 3\n'));
    assert.deepEqual(await closed, [1000, 'shell exited']);
    // A VM without SHELL_INGRESS gets no shell token, and HTTP_INGRESS-less VMs no HTTP.
    const plain = await launch();
    assert.equal((await api(base, 'POST', `${V}/microvms/${plain}/shell-auth-token`, { expirationInMinutes: 5 })).status, 400);
    const shellOnly = await launch({ ingressNetworkConnectors: [ARNS.managedConnector('SHELL_INGRESS')] });
    const t = await token(shellOnly);
    assert.equal((await get(shellOnly, '/', { 'x-aws-proxy-auth': t })).status, 403);
    for (const vm of [id, plain, shellOnly]) await api(base, 'DELETE', `${V}/microvms/${vm}`);
  });

  test('beyond AWS: the guest can keep itself active and ask to be suspended', async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 3, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const agent = server.engine.get(id)?.agent;
    assert.ok(agent);
    // An app busy without inbound traffic: a loop inside the guest says so twice a second. Starting it is
    // held active (as an open stream would be), so a slow start cannot race the idle timer.
    const startup = server.lifecycle.holdActive(id);
    const loop = 'while true; do /run/cella/cella activity >/dev/null; sleep 0.5; done';
    const started = await agent.exec({ argv: ['/bin/sh', '-c', `(${loop}) >/dev/null 2>&1 &`] }, { timeoutMs: 30_000 });
    assert.equal(started.exitCode, 0);
    startup();
    const end = Date.now() + 6000;
    while (Date.now() < end) {
      assert.equal((await server.store.getVm(id))?.state, 'RUNNING', 'no inbound traffic, yet not idle');
      await new Promise((res) => setTimeout(res, 250));
    }
    // The guest may be stopped before this command's own exit reaches the host: do not wait for it.
    void agent.exec({ argv: ['/run/cella/cella', 'suspend'] }, { timeoutMs: 15_000 }).catch(() => {});
    const s = await waitState(base, id, ['SUSPENDED']);
    assert.equal(s.stateReason, undefined, 'a VM asleep at its own request is healthy');
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });
});
