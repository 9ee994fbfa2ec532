import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { imageBuild } from '../../test/fixtures/image-build.js';
import { CellaClient, CellaConnectionError, isCellaError, type ImageBuild, type Microvm, type VmState } from './index.js';

interface Seen {
  method: string;
  url: string;
  auth: string | undefined;
  type: string | undefined;
  length: string | undefined;
  body: string;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** A fake server: answers by "METHOD /path" (path as sent, still encoded) and records every request. */
async function fake(handlers: Record<string, Handler>): Promise<{ client: CellaClient; seen: Seen[]; url: string; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const h = req.headers;
      seen.push({ method: req.method ?? '', url: req.url ?? '', auth: h.authorization, type: h['content-type'], length: h['content-length'], body });
      const path = (req.url ?? '').split('?')[0];
      const handler = handlers[`${req.method} ${path}`];
      if (handler) handler(req, res, body);
      else json(res, 404, { code: 'UNKNOWN_OPERATION', message: `no fake for ${req.method} ${path}` });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    client: new CellaClient({ url, apiKey: 'k-secret' }),
    seen,
    url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

const empty: Handler = (_req, res) => res.writeHead(200, { 'content-length': 0 }).end();

function vm(id: string, state: VmState): Microvm {
  return {
    microvmId: id,
    state,
    endpoint: `${id}.cella.localhost`,
    imageArn: 'arn:aws:lambda:us-east-1:000000000000:microvm-image:demo',
    imageVersion: '1.0',
    maximumDurationInSeconds: 28800,
    startedAt: 1735689600,
    ingressNetworkConnectors: [],
    egressNetworkConnectors: [],
  };
}

test('sends the Bearer key, the method, the path and the JSON body', async () => {
  const f = await fake({ 'POST /2025-09-09/microvms': (_q, res, body) => json(res, 200, { ...vm('mvm-1', 'PENDING'), echo: JSON.parse(body) as unknown }) });
  try {
    const req = { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 3600, autoResumeEnabled: true } };
    const got = await f.client.runMicrovm(req);
    assert.equal(got.microvmId, 'mvm-1');
    assert.equal(got.state, 'PENDING');
    assert.equal(f.seen.length, 1);
    assert.equal(f.seen[0]?.auth, 'Bearer k-secret');
    assert.deepEqual(JSON.parse(f.seen[0]?.body ?? ''), req);
  } finally {
    await f.close();
  }
});

const ARN = 'arn:aws:lambda:us-east-1:000000000000:microvm-image:demo';
const T = 1735689600;
const config = { baseImageArn: 'arn:aws:lambda:us-east-1:aws:microvm-image:busybox', codeArtifact: { uri: 'file:///tmp/app.zip' } };
const image = { imageArn: ARN, name: 'demo', state: 'CREATED', latestActiveImageVersion: '1.0', createdAt: T };
const version = { ...config, imageArn: ARN, imageVersion: '1.0', state: 'SUCCESSFUL', status: 'ACTIVE', createdAt: T };
const started = { ...config, imageArn: ARN, name: 'demo', state: 'CREATING', imageVersion: '1.0', buildId: 'b-1', createdAt: T };
const build = (buildState: string, extra: Partial<ImageBuild> = {}): ImageBuild => imageBuild(ARN, '1.0', 'b-1', buildState, T, extra);

test('every operation goes to its path with its method; path params are percent-encoded', async () => {
  const usage = { runningSeconds: 1, vcpuSeconds: 1, gibSeconds: 0.25, snapshotBytesWritten: 0, snapshotBytesRead: 0, snapshotStorageGibHours: 0 };
  const token = { authToken: { 'X-aws-proxy-auth': 'tok' } };
  const IMG = '/2025-09-09/microvm-images';
  const f = await fake({
    'GET /2025-09-09/microvms/a%2Fb%20c': (_q, res) => json(res, 200, vm('a/b c', 'RUNNING')),
    'POST /2025-09-09/microvms/m1/suspend': empty,
    'POST /2025-09-09/microvms/m1/resume': empty,
    'DELETE /2025-09-09/microvms/m1': empty,
    'POST /2025-09-09/microvms/m1/auth-token': (_q, res) => json(res, 200, token),
    'POST /2025-09-09/microvms/m1/shell-auth-token': (_q, res) => json(res, 200, token),
    'GET /cella/v1/microvms/m1/usage': (_q, res) => json(res, 200, { ...usage, microvmId: 'm1' }),
    'GET /cella/v1/usage': (_q, res) => json(res, 200, { total: usage, microvms: [usage] }),
    [`POST ${IMG}`]: (_q, res) => json(res, 200, started),
    [`PUT ${IMG}/demo`]: (_q, res) => json(res, 200, { ...started, state: 'UPDATING', imageVersion: '2.0', buildId: 'b-2' }),
    [`GET ${IMG}`]: (_q, res) => json(res, 200, { items: [image] }),
    [`GET ${IMG}/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Amicrovm-image%3Ademo`]: (_q, res) => json(res, 200, image),
    [`DELETE ${IMG}/demo`]: (_q, res) => json(res, 200, { imageIdentifier: 'demo', state: 'DELETED' }),
    [`GET ${IMG}/demo/versions`]: (_q, res) => json(res, 200, { items: [version] }),
    [`GET ${IMG}/demo/versions/1.0`]: (_q, res) => json(res, 200, version),
    [`PATCH ${IMG}/demo/versions/1.0`]: (_q, res) => json(res, 200, { ...version, status: 'INACTIVE' }),
    [`DELETE ${IMG}/demo/versions/1.0`]: (_q, res) => json(res, 200, { imageIdentifier: 'demo', imageVersion: '1.0', state: 'DELETED' }),
    [`GET ${IMG}/demo/versions/1.0/builds`]: (_q, res) => json(res, 200, { items: [build('SUCCESSFUL')] }),
    [`GET ${IMG}/demo/versions/1.0/builds/b-1`]: (_q, res) => json(res, 200, build('SUCCESSFUL')),
    'GET /2025-09-09/managed-microvm-images': (_q, res) => json(res, 200, { items: [{ imageArn: config.baseImageArn, createdAt: T }] }),
    'GET /2025-09-09/managed-microvm-images/busybox/versions': (_q, res) =>
      json(res, 200, { items: [{ imageArn: config.baseImageArn, imageVersion: '1', status: 'AVAILABLE', createdAt: T }] }),
  });
  try {
    const c = f.client;
    assert.equal((await c.getMicrovm('a/b c')).microvmId, 'a/b c');
    assert.equal(await c.suspendMicrovm('m1'), undefined);
    await c.resumeMicrovm('m1');
    await c.terminateMicrovm('m1');
    assert.deepEqual(await c.createMicrovmAuthToken('m1', { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] }), token);
    assert.deepEqual(await c.createMicrovmShellAuthToken('m1', { expirationInMinutes: 5 }), token);
    assert.equal((await c.getMicrovmUsage('m1')).microvmId, 'm1');
    assert.equal((await c.getUsage()).microvms.length, 1);
    const create = { name: 'demo', ...config, resources: [{ minimumMemoryInMiB: 256 as const }] };
    assert.equal((await c.createImage(create)).buildId, 'b-1');
    assert.equal((await c.updateImage('demo', config)).imageVersion, '2.0');
    assert.equal((await c.listImages({ nameFilter: 'de' })).items[0]?.name, 'demo');
    assert.equal((await c.getImage(ARN)).name, 'demo');
    assert.equal((await c.deleteImage('demo')).state, 'DELETED');
    assert.equal((await c.listImageVersions('demo', { maxResults: 5 })).items[0]?.imageVersion, '1.0');
    assert.equal((await c.getImageVersion('demo', '1.0')).status, 'ACTIVE');
    assert.equal((await c.updateImageVersion('demo', '1.0', 'INACTIVE')).status, 'INACTIVE');
    assert.equal((await c.deleteImageVersion('demo', '1.0')).imageVersion, '1.0');
    assert.equal((await c.listImageBuilds('demo', '1.0')).items[0]?.buildId, 'b-1');
    assert.equal((await c.getImageBuild('demo', '1.0', 'b-1')).buildState, 'SUCCESSFUL');
    assert.equal((await c.listManagedImages()).items[0]?.imageArn, config.baseImageArn);
    assert.equal((await c.listManagedImageVersions('busybox')).items[0]?.status, 'AVAILABLE');
    assert.deepEqual(
      f.seen.map((s) => `${s.method} ${s.url}`),
      [
        'GET /2025-09-09/microvms/a%2Fb%20c',
        'POST /2025-09-09/microvms/m1/suspend',
        'POST /2025-09-09/microvms/m1/resume',
        'DELETE /2025-09-09/microvms/m1',
        'POST /2025-09-09/microvms/m1/auth-token',
        'POST /2025-09-09/microvms/m1/shell-auth-token',
        'GET /cella/v1/microvms/m1/usage',
        'GET /cella/v1/usage',
        `POST ${IMG}`,
        `PUT ${IMG}/demo`,
        `GET ${IMG}?nameFilter=de`,
        `GET ${IMG}/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Amicrovm-image%3Ademo`,
        `DELETE ${IMG}/demo`,
        `GET ${IMG}/demo/versions?maxResults=5`,
        `GET ${IMG}/demo/versions/1.0`,
        `PATCH ${IMG}/demo/versions/1.0`,
        `DELETE ${IMG}/demo/versions/1.0`,
        `GET ${IMG}/demo/versions/1.0/builds`,
        `GET ${IMG}/demo/versions/1.0/builds/b-1`,
        'GET /2025-09-09/managed-microvm-images',
        'GET /2025-09-09/managed-microvm-images/busybox/versions',
      ],
    );
    assert.deepEqual(JSON.parse(f.seen[4]?.body ?? ''), { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] });
    assert.deepEqual(JSON.parse(f.seen[8]?.body ?? ''), create);
    assert.deepEqual(JSON.parse(f.seen[9]?.body ?? ''), config);
    assert.deepEqual(JSON.parse(f.seen[15]?.body ?? ''), { status: 'INACTIVE' });
    // Operations without a body send none.
    assert.equal(f.seen[1]?.body, '');
    assert.ok(f.seen.every((s) => s.auth === 'Bearer k-secret'));
  } finally {
    await f.close();
  }
});

test('uploadCodeArtifact sends the raw zip, from bytes or streamed from a file', async () => {
  const f = await fake({
    'POST /cella/v1/code-artifacts': (_q, res, body) => json(res, 200, { uri: 'file:///data/artifacts/x.zip', sizeInBytes: body.length, sha256: 'x' }),
  });
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-client-'));
  try {
    const bytes = Buffer.from('PK\x05\x06 not really a zip');
    assert.deepEqual(await f.client.uploadCodeArtifact(bytes), { uri: 'file:///data/artifacts/x.zip', sizeInBytes: bytes.length, sha256: 'x' });
    const file = path.join(dir, 'app.zip');
    const big = 'z'.repeat(300_000);
    writeFileSync(file, big);
    assert.equal((await f.client.uploadCodeArtifact(file)).sizeInBytes, big.length);
    for (const [s, body] of [
      [f.seen[0], bytes.toString()],
      [f.seen[1], big],
    ] as const) {
      assert.equal(s?.url, '/cella/v1/code-artifacts');
      assert.equal(s?.type, 'application/zip');
      assert.equal(s?.length, String(body.length));
      assert.equal(s?.body, body);
    }
    await assert.rejects(f.client.uploadCodeArtifact(path.join(dir, 'missing.zip')), { code: 'ENOENT' });
    // Over the server's limit: refused before anything is sent (a sparse file, so nothing is written either).
    const huge = path.join(dir, 'huge.zip');
    writeFileSync(huge, '');
    truncateSync(huge, 513 * 1024 * 1024);
    await assert.rejects(f.client.uploadCodeArtifact(huge), (err: unknown) => isCellaError(err, 'PAYLOAD_TOO_LARGE'));
    assert.equal(f.seen.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await f.close();
  }
});

test('error bodies become CellaErrors with their code, details and HTTP status', async () => {
  const f = await fake({
    'GET /2025-09-09/microvms/gone': (_q, res) =>
      json(res, 404, { message: 'MicroVM gone not found', code: 'NOT_FOUND', resourceId: 'gone', resourceType: 'Microvm' }),
    'POST /2025-09-09/microvms/m1/resume': (_q, res) => json(res, 409, { message: 'not suspended', code: 'SOMETHING_NEW' }),
    'GET /cella/v1/usage': (_q, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('bad gateway'),
    'GET /2025-09-09/microvm-images': (_q, res) => json(res, 401, { message: 'missing API key', code: 'UNAUTHENTICATED' }),
  });
  try {
    await assert.rejects(f.client.getMicrovm('gone'), (err: unknown) => {
      assert.ok(isCellaError(err, 'NOT_FOUND'));
      assert.equal(err.message, 'MicroVM gone not found');
      assert.equal(err.httpStatus, 404);
      assert.deepEqual(err.details, { resourceId: 'gone', resourceType: 'Microvm', httpStatus: 404 });
      return true;
    });
    // An unknown code falls back to the status's code and is kept.
    await assert.rejects(f.client.resumeMicrovm('m1'), (err: unknown) => {
      assert.ok(isCellaError(err, 'INVALID_STATE'));
      assert.equal(err.details.serverCode, 'SOMETHING_NEW');
      assert.equal(err.details.httpStatus, 409);
      return true;
    });
    await assert.rejects(f.client.getUsage(), (err: unknown) => {
      assert.ok(isCellaError(err, 'INTERNAL'));
      assert.equal(err.message, 'bad gateway');
      assert.equal(err.details.httpStatus, 502);
      return true;
    });
    await assert.rejects(f.client.listImages(), (err: unknown) => isCellaError(err, 'UNAUTHENTICATED'));
  } finally {
    await f.close();
  }
});

test('listAllMicrovms follows nextToken, across empty pages, keeping the filter', async () => {
  const pages: Record<string, { items: unknown[]; nextToken?: string }> = {
    '': { items: [vm('a', 'RUNNING'), vm('b', 'SUSPENDED')], nextToken: 't/1+=' },
    't/1+=': { items: [], nextToken: 't2' },
    t2: { items: [vm('c', 'TERMINATED')] },
  };
  const f = await fake({
    'GET /2025-09-09/microvms': (req, res) => {
      const q = new URL(req.url ?? '', 'http://x').searchParams;
      json(res, 200, pages[q.get('nextToken') ?? '']);
    },
  });
  try {
    const ids: string[] = [];
    for await (const s of f.client.listAllMicrovms({ imageIdentifier: 'demo', maxResults: 2 })) ids.push(s.microvmId);
    assert.deepEqual(ids, ['a', 'b', 'c']);
    const queries = f.seen.map((s) => Object.fromEntries(new URL(s.url, 'http://x').searchParams));
    assert.deepEqual(queries, [
      { imageIdentifier: 'demo', maxResults: '2' },
      { imageIdentifier: 'demo', maxResults: '2', nextToken: 't/1+=' },
      { imageIdentifier: 'demo', maxResults: '2', nextToken: 't2' },
    ]);
  } finally {
    await f.close();
  }
});

test('waitForState polls until a wanted state, stops at TERMINATED, and times out', async () => {
  const states: VmState[] = ['PENDING', 'PENDING', 'RUNNING'];
  const f = await fake({
    'GET /2025-09-09/microvms/m1': (_q, res) => json(res, 200, vm('m1', states.shift() ?? 'RUNNING')),
    'GET /2025-09-09/microvms/dead': (_q, res) => json(res, 200, { ...vm('dead', 'TERMINATED'), stateReason: 'run hook failed' }),
    'GET /2025-09-09/microvms/slow': (_q, res) => json(res, 200, vm('slow', 'PENDING')),
  });
  try {
    assert.equal((await f.client.waitForState('m1', ['RUNNING'], { intervalMs: 5 })).state, 'RUNNING');
    assert.equal(f.seen.length, 3);
    const dead = await f.client.waitForState('dead', ['RUNNING'], { intervalMs: 5 });
    assert.equal(dead.state, 'TERMINATED');
    assert.equal(dead.stateReason, 'run hook failed');
    await assert.rejects(f.client.waitForState('slow', ['RUNNING'], { timeoutMs: 50, intervalMs: 5 }), (err: unknown) => {
      assert.ok(isCellaError(err, 'INVALID_STATE'));
      assert.match(err.message, /still PENDING/);
      return true;
    });
  } finally {
    await f.close();
  }
});

test('waitForBuild polls until the build ends, and times out', async () => {
  const states = ['PENDING', 'IN_PROGRESS', 'FAILED'];
  const f = await fake({
    'GET /2025-09-09/microvm-images/demo/versions/1.0/builds/b-1': (_q, res) => {
      const state = states.shift() ?? 'FAILED';
      json(res, 200, build(state, state === 'FAILED' ? { stateReason: 'CONTAINER_BUILD_FAILED', stateReasonMessage: 'step 2 exited 1' } : {}));
    },
    'GET /2025-09-09/microvm-images/demo/versions/1.0/builds/slow': (_q, res) => json(res, 200, build('IN_PROGRESS', { buildId: 'slow' })),
  });
  try {
    const seen: string[] = [];
    const b = await f.client.waitForBuild('demo', '1.0', 'b-1', { intervalMs: 5, onPoll: (x) => seen.push(x.buildState) });
    assert.equal(b.buildState, 'FAILED');
    assert.equal(b.stateReason, 'CONTAINER_BUILD_FAILED');
    assert.deepEqual(seen, ['PENDING', 'IN_PROGRESS', 'FAILED']);
    await assert.rejects(f.client.waitForBuild('demo', '1.0', 'slow', { timeoutMs: 30, intervalMs: 5 }), (err: unknown) => {
      assert.ok(isCellaError(err, 'INVALID_STATE'));
      assert.equal(err.details.resourceId, 'slow');
      return true;
    });
  } finally {
    await f.close();
  }
});

test('buildLog hands over chunks as they come and resolves with the whole log when the stream ends', async () => {
  let finish: (() => void) | undefined;
  const f = await fake({
    'GET /cella/v1/microvm-images/demo/versions/1.0/builds/b-1/logs': (_q, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('Step 1/2 : FROM busybox\n');
      // The rest comes once the caller has seen the first chunk, as from a running build.
      finish = () => res.end('Step 2/2 : COPY . /app\n');
    },
  });
  try {
    const chunks: string[] = [];
    const text = await f.client.buildLog('demo', '1.0', 'b-1', {
      follow: true,
      onChunk: (c) => {
        chunks.push(c.toString());
        finish?.();
      },
    });
    assert.equal(text, 'Step 1/2 : FROM busybox\nStep 2/2 : COPY . /app\n');
    assert.equal(chunks[0], 'Step 1/2 : FROM busybox\n');
    assert.equal(f.seen[0]?.url, '/cella/v1/microvm-images/demo/versions/1.0/builds/b-1/logs?follow=true');
  } finally {
    await f.close();
  }
});

test('streamLogs yields chunks as they come and ends quietly on abort', async () => {
  const f = await fake({
    'GET /cella/v1/microvms/m1/logs': (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('one\n');
      if (!req.url?.includes('follow=true')) res.end('two\n');
      // With follow the stream stays open, as for a live VM.
    },
  });
  try {
    let text = '';
    for await (const chunk of f.client.streamLogs('m1')) text += chunk.toString();
    assert.equal(text, 'one\ntwo\n');

    const abort = new AbortController();
    let followed = '';
    for await (const chunk of f.client.streamLogs('m1', { follow: true, signal: abort.signal })) {
      followed += chunk.toString();
      abort.abort();
    }
    assert.equal(followed, 'one\n');
    assert.equal(f.seen[1]?.url, '/cella/v1/microvms/m1/logs?follow=true');
  } finally {
    await f.close();
  }
});

test('an unreachable server is a CellaConnectionError naming the URL', async () => {
  const f = await fake({});
  await f.close();
  const c = new CellaClient({ url: f.url, apiKey: 'k' });
  await assert.rejects(c.getUsage(), (err: unknown) => {
    assert.ok(err instanceof CellaConnectionError);
    assert.equal(err.code, 'ECONNREFUSED');
    assert.equal(err.url, f.url);
    assert.match(err.message, /cannot reach the Cella server at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    return true;
  });
});

test('fromEnv reads CELLA_URL and CELLA_API_KEY; an injected fetch is used', async () => {
  assert.equal(CellaClient.fromEnv({ CELLA_API_KEY: 'k' }).url, 'http://127.0.0.1:7470');
  assert.equal(CellaClient.fromEnv({ CELLA_API_KEY: 'k', CELLA_URL: 'http://h:1/' }).url, 'http://h:1');
  assert.throws(
    () => CellaClient.fromEnv({}),
    (err: unknown) => isCellaError(err, 'UNAUTHENTICATED'),
  );
  const calls: string[] = [];
  const c = new CellaClient({
    url: 'http://nowhere.invalid',
    apiKey: 'k',
    fetch: async (input) => {
      calls.push(input instanceof Request ? input.url : input.toString());
      return new Response(JSON.stringify({ items: [] }), { status: 200, headers: { 'content-type': 'application/json' } });
    },
  });
  assert.deepEqual(await c.listImages(), { items: [] });
  assert.deepEqual(calls, ['http://nowhere.invalid/2025-09-09/microvm-images']);
});
