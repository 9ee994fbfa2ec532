/**
 * The API's edges against a real cellad on port 0, with no VM: what a
 * request can get wrong before it reaches an operation, and the endpoint
 * port's connection limits. Regression tests for issue 11's API gaps.
 */
import assert from 'node:assert/strict';
import { readdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { routes } from '../src/contract/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, V, api } from './control-helpers.js';
import { exchange } from './fixtures/raw-http.js';
import { closed, tcpTo } from './fixtures/sockets.js';
import { rawZip } from './fixtures/zip-raw.js';
import { tempDataDir } from './helpers.js';

interface Answer {
  status: number;
  type: string | undefined;
  body: { code?: string; message?: string; nextToken?: string; items?: unknown[] };
}

const ROUTES = Object.entries(routes(60)).map(([op, r]) => ({ op, method: r.method, path: r.path, isList: op.startsWith('List') }));
const PER_CLIENT = 8;

describe('API edges (no VM)', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;

  before(async () => {
    dir = tempDataDir('api');
    server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, demoImage: false, apiRateScale: 0, endpointConnectionsPerClient: PER_CLIENT, log: () => {} });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** One request with the path sent byte for byte as given (fetch would normalise it). */
  const send = (method: string, p: string, opts: { body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, method, path: p, agent: false, headers: { authorization: `Bearer ${API_KEY}`, ...opts.headers } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          const type = res.headers['x-amzn-errortype'];
          resolve({ status: res.statusCode ?? 0, type: Array.isArray(type) ? type[0] : type, body: text ? (JSON.parse(text) as Answer['body']) : {} });
        });
      });
      req.on('error', reject);
      req.end(opts.body);
    });
  /** One request written as given, on its own connection; its answer as status, error type and code. */
  const rawError = async (method: string, target: string, headers: Array<[string, string]>, body?: string): Promise<{ status: number; type: string | undefined; code: string }> => {
    const out = await exchange(server.port, { method, target, headers: [['host', 'x'], ...headers], ...(body === undefined ? {} : { body: Buffer.from(body) }) }, 30_000);
    if (out.kind !== 'answer') throw new Error(`${method} ${target}: ${out.kind}`);
    return { status: out.status, type: out.headers['x-amzn-errortype'], code: (JSON.parse(out.body.toString()) as { code: string }).code };
  };
  const concrete = (p: string, value = 'x'): string => p.replace(/\{\w+\}/g, value);

  test('malformed percent-encoding in a path parameter is 400 INVALID_ARGUMENT on every route that has one (was a 500 "URI malformed")', { timeout: 60_000 }, async () => {
    const withParams = ROUTES.filter((r) => r.path.includes('{'));
    assert.ok(withParams.length >= 15, 'routes with path parameters');
    for (const r of withParams) {
      for (const bad of ['%', '%ZZ', '%C0%AF', '%FF%FE', '%E0%80%AF', 'ok%']) {
        const a = await send(r.method, concrete(r.path, bad), r.method === 'GET' || r.method === 'DELETE' ? {} : { body: '{}', headers: { 'content-type': 'application/json' } });
        assert.equal(a.status, 400, `${r.op} ${bad}: ${JSON.stringify(a.body)}`);
        assert.equal(a.body.code, 'INVALID_ARGUMENT', `${r.op} ${bad}`);
        assert.equal(a.type, 'ValidationException');
      }
    }
  });

  test('maxResults=1.5 and maxResults=true are refused on every List (were read as 1)', { timeout: 60_000 }, async () => {
    const lists = ROUTES.filter((r) => r.isList);
    assert.equal(lists.length, 8);
    for (const r of lists) {
      for (const q of ['maxResults=1.5', 'maxResults=true', 'maxResults=1e1', 'maxResults=+1', 'maxResults=1&maxResults=2']) {
        const a = await send('GET', `${concrete(r.path)}?${q}`);
        assert.equal(a.status, 400, `${r.op} ${q}: ${JSON.stringify(a.body)}`);
        assert.equal(a.body.code, 'INVALID_ARGUMENT');
      }
    }
  });

  test('a nextToken no List issued is refused on every List (five answered the first page)', { timeout: 60_000 }, async () => {
    const other = Buffer.from(JSON.stringify(['ListNetworkConnectors', { o: 1 }])).toString('base64url');
    for (const r of ROUTES.filter((x) => x.isList)) {
      for (const t of ['x', 'A', 'MA', 'IA', '0', 'garbage', 'eyJ9', r.op === 'ListNetworkConnectors' ? 'W10' : other]) {
        const a = await send('GET', `${concrete(r.path)}?nextToken=${t}`);
        assert.equal(a.status, 400, `${r.op} nextToken=${t}: ${JSON.stringify(a.body)}`);
        assert.equal(a.body.code, 'INVALID_ARGUMENT');
      }
    }
  });

  test('a List pages through every item in its order with the tokens it issues', { timeout: 60_000 }, async () => {
    // Connectors are listed by name.
    const names = ['c-a', 'c-b', 'c-c'];
    for (const name of names) assert.equal((await api(server.url, 'POST', '/cella/v1/network-connectors', { name, egress: { domains: ['example.com'] } })).status, 200);
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const a = await send('GET', `/cella/v1/network-connectors?maxResults=1${token ? `&nextToken=${token}` : ''}`);
      assert.equal(a.status, 200, JSON.stringify(a.body));
      seen.push(...(a.body.items as Array<{ name: string }>).map((i) => i.name));
      token = a.body.nextToken;
    } while (token);
    assert.deepEqual(seen, names);
  });

  test('unknown methods, with or without a body, and CONNECT get a 405 JSON error (was an empty 400 or a dropped connection)', { timeout: 60_000 }, async () => {
    const auth: [string, string] = ['authorization', `Bearer ${API_KEY}`];
    const big = 'x'.repeat(200_000);
    const cases: Array<[string, string, Array<[string, string]>, string?]> = [
      ['FOO', `${V}/microvms`, [auth, ['content-length', '2']], '{}'],
      ['FOO', `${V}/microvms`, [auth, ['content-length', String(big.length)]], big],
      ['BREW', '/cella/v1/info', []],
      ['PROPFIND', `${V}/microvms`, [auth, ['content-length', '2']], '{}'],
      ['CONNECT', 'example.com:443', [auth]],
    ];
    for (const [method, target, headers, body] of cases) {
      assert.deepEqual(await rawError(method, target, headers, body), { status: 405, type: 'UnknownOperationException', code: 'METHOD_NOT_ALLOWED' }, method);
    }
    const garbled = await rawError('GET', '/x', [['content-length', 'abc']]);
    assert.deepEqual(garbled, { status: 400, type: 'ValidationException', code: 'INVALID_ARGUMENT' });
    const target = await send('GET', '//[');
    assert.equal(target.status, 404);
  });

  test('a 100 KB URL is a 414 and a 64 KB header a 431, both JSON (the connection was reset)', { timeout: 60_000 }, async () => {
    const long = await fetch(`${server.url}${V}/microvms/${'a'.repeat(100_000)}`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(long.status, 414);
    assert.equal(long.headers.get('x-amzn-errortype'), 'ValidationException');
    assert.equal(((await long.json()) as { code: string }).code, 'URI_TOO_LONG');
    const big = await fetch(`${server.url}${V}/microvms`, { headers: { authorization: `Bearer ${API_KEY}`, 'x-big': 'a'.repeat(64 * 1024) } });
    assert.equal(big.status, 431);
    assert.equal(((await big.json()) as { code: string }).code, 'HEADERS_TOO_LARGE');
    // The server still answers on new connections.
    assert.equal((await api(server.url, 'GET', `${V}/microvms`)).status, 200);
  });

  test('an empty code-artifact upload (no bytes, or a zip with no files) is 400 and nothing is stored', { timeout: 60_000 }, async () => {
    const artifacts = path.join(dir, 'artifacts');
    const stored = (): string[] => {
      try {
        return readdirSync(artifacts);
      } catch {
        return [];
      }
    };
    const before = stored();
    const uploads: Array<{ body?: Buffer | string; headers?: Record<string, string> }> = [
      {},
      { body: '', headers: { 'content-length': '0' } },
      { body: '', headers: { 'transfer-encoding': 'chunked' } },
      { body: rawZip([]), headers: { 'content-type': 'application/zip' } },
    ];
    for (const u of uploads) {
      const a = await send('POST', '/cella/v1/code-artifacts', u);
      assert.equal(a.status, 400, JSON.stringify(a.body));
      assert.equal(a.body.code, 'INVALID_ARGUMENT');
      assert.ok(a.body.message && a.body.message.length > 10);
    }
    assert.deepEqual(stored(), before);
  });

  // Regression (issue 11): 300 slowloris connections from one client were held on the endpoint port for 25 s and more.
  test('the endpoint port closes connections beyond the per-client limit, and one that sends no request', { timeout: 60_000 }, async () => {
    const held = await Promise.all(Array.from({ length: PER_CLIENT }, () => tcpTo(server.proxyPort)));
    const extra = await tcpTo(server.proxyPort);
    await closed(extra);
    assert.ok(held.every((s) => !s.destroyed), 'the first ones are still open');
    // None of them sends a request: each is closed at the deadline for a first request.
    await Promise.all(held.map(closed));
  });
});
