/**
 * The endpoint proxy against a real cellad, real VMs and real TLS: what
 * needs a guest. One request through the real guest path; auto-resume from
 * a real checkpoint (RAM kept, one resume for many requests, a damaged
 * checkpoint); the shell's PTY; the guest's own activity and suspend
 * requests. The protocol tests (tokens, ports, headers, HTTP/2, large
 * bodies, SSE, WebSocket) run without a VM in test/control-plane/proxy.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type WebSocket from 'ws';
import { Arns } from '../src/contract/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, V, api, createImage, shutdown, waitState, type MicrovmBody } from './control-helpers.js';
import { endpointRequest, endpointWebSocket, opened, type EndpointReply } from './fixtures/endpoint-client.js';
import { eventually, tempDataDir } from './helpers.js';

/** A bound on each test: a hung guest fails its test instead of stalling the suite. */
const T = { timeout: 180_000 };

/** The ARNs of a server started with the default region and account. */
const ARNS = new Arns();

describe('endpoint proxy', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let base: string;
  let ca: Buffer;

  const host = (id: string): string => `${id}.${server.domain}`;

  const get = (id: string, p: string, headers: Record<string, string> = {}): Promise<EndpointReply> =>
    endpointRequest({ port: server.proxyPort, ca }, host(id), p, headers);

  const token = async (id: string): Promise<string> => {
    const r = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/auth-token`, {
      expirationInMinutes: 5,
      allowedPorts: [{ port: 8080 }],
    });
    assert.equal(r.status, 200, r.text);
    return r.body.authToken['X-aws-proxy-auth'] as string;
  };

  const wsTo = (id: string, p: string, protocols: string[]): WebSocket => endpointWebSocket({ port: server.proxyPort, ca }, host(id), p, protocols);

  const launch = async (body: Record<string, unknown> = {}): Promise<string> => {
    const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
    assert.equal(r.status, 200, r.text);
    await waitState(base, r.body.microvmId, ['RUNNING']);
    return r.body.microvmId;
  };

  before(
    async () => {
      dir = tempDataDir('proxy');
      // No resume window: auto-resume here always restores from the checkpoint (the window is covered by the engine's tests).
      server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, resumeWindowSeconds: 0, log: () => {} });
      base = server.url;
      ca = readFileSync(server.caFile as string);
      const { build, log } = await createImage(base, 'demo');
      assert.equal(build.buildState, 'SUCCESSFUL', log);
    },
    { timeout: 600_000 },
  );

  after(async () => {
    await shutdown(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a valid token reaches the app over TLS signed by the CA `cella ca` names', T, async () => {
    const id = await launch();
    const t = await token(id);
    const r = await get(id, '/inc', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 200);
    assert.equal(r.text, '1');
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('a suspended VM with auto-resume: 50 concurrent requests are all served by one resume', T, async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const t = await token(id);
    assert.equal((await get(id, '/inc', { 'x-aws-proxy-auth': t })).text, '1');
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
        replies.map((r) => Number(r.text)).sort((x, y) => x - y),
        Array.from({ length: 50 }, (_, i) => i + 2),
        'RAM kept: the counter went on from 1',
      );
      assert.equal(resumes, 1);
    } finally {
      server.engine.resume = resume;
    }
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('an auto-resume that fails answers 502 with the reason, and the VM stays suspended', T, async () => {
    const id = await launch({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const t = await token(id);
    await waitState(base, id, ['SUSPENDED']);
    const checkpoint = path.join(dir, 'vms', id, 'checkpoint');
    truncateSync(checkpoint, Math.floor(statSync(checkpoint).size / 2));
    const r = await get(id, '/', { 'x-aws-proxy-auth': t });
    assert.equal(r.status, 502);
    assert.match(r.text, /could not be resumed/);
    const after = await api<MicrovmBody>(base, 'GET', `${V}/microvms/${id}`);
    assert.equal(after.body.state, 'SUSPENDED');
    assert.match(after.body.stateReason ?? '', /resume failed/);
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('shell: a PTY round trip with a resize through wss://<endpoint>/shell', T, async () => {
    const id = await launch({ ingressNetworkConnectors: [ARNS.managedConnector('HTTP_INGRESS'), ARNS.managedConnector('SHELL_INGRESS')] });
    const r = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/shell-auth-token`, { expirationInMinutes: 5 });
    assert.equal(r.status, 200, r.text);
    const shellToken = r.body.authToken['X-aws-proxy-auth'] as string;
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
    await api(base, 'DELETE', `${V}/microvms/${id}`);
  });

  test('beyond AWS: the guest can keep itself active and ask to be suspended', T, async () => {
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
