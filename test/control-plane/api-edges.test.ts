/**
 * The API's edges, with no VM: what a request can get wrong before it
 * reaches an operation, and paging through every List with the tokens it
 * issues. Regression tests for issue 11's API gaps.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Arns, routes } from '../../src/contract/index.js';
import { type ApiAnswer, exchange, sendAsIs } from '../fixtures/raw-http.js';
import { rawZip } from '../fixtures/zip-raw.js';
import { V, seedImage, startHarness, type Harness } from '../fixtures/harness.js';

// The paged Lists: ListTags answers one map, without paging.
const ROUTES = Object.entries(routes(60)).map(([op, r]) => ({ op, method: r.method, path: r.path, isList: op.startsWith('List') && op !== 'ListTags' }));

describe('API edges (no VM)', { concurrency: false }, () => {
  let h: Harness;
  let port: number;

  before(async () => {
    h = await startHarness();
    port = Number(new URL(h.url).port);
  });
  after(async () => {
    await h.close();
  });

  /** One request with the path sent byte for byte as given (fetch would normalise it). */
  const send = (method: string, p: string, opts: { body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<ApiAnswer> =>
    sendAsIs(port, {
      method,
      path: p,
      headers: { authorization: `Bearer ${h.apiKey}`, ...opts.headers },
      ...(opts.body === undefined ? {} : { body: opts.body }),
    });
  /** One request written as given, on its own connection; its answer as status, error type and code. */
  const rawError = async (
    method: string,
    target: string,
    headers: Array<[string, string]>,
    body?: string,
  ): Promise<{ status: number; type: string | undefined; code: string }> => {
    const out = await exchange(
      port,
      { method, target, headers: [['host', 'x'], ...headers], ...(body === undefined ? {} : { body: Buffer.from(body) }) },
      30_000,
    );
    if (out.kind !== 'answer') throw new Error(`${method} ${target}: ${out.kind}`);
    return { status: out.status, type: out.headers['x-amzn-errortype'], code: (JSON.parse(out.body.toString()) as { code: string }).code };
  };
  const concrete = (p: string, value = 'x'): string => p.replace(/\{\w+\}/g, value);

  /** Every item of a List, page by page with maxResults=1 and the nextToken each page gives. */
  const pageAll = async (p: string): Promise<unknown[]> => {
    const seen: unknown[] = [];
    let token: string | undefined;
    for (let pages = 0; ; pages++) {
      assert.ok(pages < 100, `${p}: the tokens do not end`);
      const a = await send('GET', `${p}${p.includes('?') ? '&' : '?'}maxResults=1${token ? `&nextToken=${encodeURIComponent(token)}` : ''}`);
      assert.equal(a.status, 200, `${p}: ${JSON.stringify(a.body)}`);
      assert.ok((a.body.items ?? []).length <= 1);
      seen.push(...(a.body.items ?? []));
      token = a.body.nextToken;
      if (!token) return seen;
    }
  };

  test(
    'malformed percent-encoding in a path parameter is 400 INVALID_ARGUMENT on every route that has one (was a 500 "URI malformed")',
    { timeout: 30_000 },
    async () => {
      const withParams = ROUTES.filter((r) => r.path.includes('{'));
      assert.ok(withParams.length >= 15, 'routes with path parameters');
      for (const r of withParams) {
        for (const bad of ['%', '%ZZ', '%C0%AF', '%FF%FE', '%E0%80%AF', 'ok%']) {
          const a = await send(
            r.method,
            concrete(r.path, bad),
            r.method === 'GET' || r.method === 'DELETE' ? {} : { body: '{}', headers: { 'content-type': 'application/json' } },
          );
          assert.equal(a.status, 400, `${r.op} ${bad}: ${JSON.stringify(a.body)}`);
          assert.equal(a.body.code, 'INVALID_ARGUMENT', `${r.op} ${bad}`);
          assert.equal(a.type, 'ValidationException');
        }
      }
    },
  );

  test('maxResults=1.5 and maxResults=true are refused on every List (were read as 1)', { timeout: 30_000 }, async () => {
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

  test('a nextToken no List issued is refused on every List (five answered the first page)', { timeout: 30_000 }, async () => {
    const other = Buffer.from(JSON.stringify(['ListNetworkConnectors', { o: 1 }])).toString('base64url');
    for (const r of ROUTES.filter((x) => x.isList)) {
      for (const t of ['x', 'A', 'MA', 'IA', '0', 'garbage', 'eyJ9', r.op === 'ListNetworkConnectors' ? 'W10' : other]) {
        const a = await send('GET', `${concrete(r.path)}?nextToken=${t}`);
        assert.equal(a.status, 400, `${r.op} nextToken=${t}: ${JSON.stringify(a.body)}`);
        assert.equal(a.body.code, 'INVALID_ARGUMENT');
      }
    }
  });

  test('every List pages through all of its items, in its order, with the tokens it issues', { timeout: 30_000 }, async () => {
    // Connectors and images are listed by name.
    const connectors = ['c-a', 'c-b', 'c-c'];
    for (const name of connectors)
      assert.equal((await h.api('POST', '/cella/v1/network-connectors', { name, egress: { domains: ['example.com'] } })).status, 200);
    assert.deepEqual(
      ((await pageAll('/cella/v1/network-connectors')) as Array<{ name: string }>).map((i) => i.name),
      connectors,
    );

    for (const name of ['img-b', 'img-a']) await seedImage(h.store, name, { dir: h.dataDir });
    assert.deepEqual(
      ((await pageAll(`${V}/microvm-images`)) as Array<{ name: string }>).map((i) => i.name),
      ['demo', 'img-a', 'img-b'],
    );

    // Versions, oldest first; builds of one version, oldest first.
    const v1 = await h.store.getVersion('img-a', '1.0');
    assert.ok(v1);
    await h.store.putVersion({ ...v1, version: '2.0', major: 2 });
    await h.store.putVersion({ ...v1, version: '3.0', major: 3 });
    assert.deepEqual(
      ((await pageAll(`${V}/microvm-images/img-a/versions`)) as Array<{ imageVersion: string }>).map((i) => i.imageVersion),
      ['1.0', '2.0', '3.0'],
    );
    const builds = ['b-1', 'b-2', 'b-3'];
    for (const [i, buildId] of builds.entries()) {
      await h.store.putBuild({
        buildId,
        imageName: 'img-a',
        version: '1.0',
        state: 'SUCCESSFUL',
        stateReason: null,
        message: null,
        snapshotBuild: null,
        createdAt: i + 1,
        updatedAt: null,
      });
    }
    assert.deepEqual(
      ((await pageAll(`${V}/microvm-images/img-a/versions/1.0/builds`)) as Array<{ buildId: string }>).map((i) => i.buildId),
      builds,
    );

    // MicroVMs, oldest first.
    const vms: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await h.api<{ microvmId: string }>('POST', `${V}/microvms`, { imageIdentifier: 'demo' });
      assert.equal(r.status, 200, r.text);
      vms.push(r.body.microvmId);
    }
    assert.deepEqual(
      ((await pageAll(`${V}/microvms`)) as Array<{ microvmId: string }>).map((i) => i.microvmId),
      vms,
    );
    assert.deepEqual(await pageAll(`${V}/microvms?imageIdentifier=nothing`), []);

    // Managed bases, as setup leaves them in the guest folder; each has its one version.
    const bases = ['base-a', 'base-b'];
    for (const name of bases) {
      const dir = path.join(h.dataDir, 'guest', 'bases', name);
      mkdirSync(path.join(dir, 'tree'), { recursive: true });
      writeFileSync(
        path.join(dir, 'base.json'),
        JSON.stringify({ name, description: name, env: {}, createdAt: new Date(0).toISOString(), sizeBytes: 1, inputsSha256: 'x' }),
      );
    }
    assert.deepEqual(
      ((await pageAll(`${V}/managed-microvm-images`)) as Array<{ imageArn: string }>).map((i) => i.imageArn),
      bases.map((b) => new Arns().managedImage(b)),
    );
    assert.equal((await pageAll(`${V}/managed-microvm-images/base-a/versions`)).length, 1);
  });

  test(
    'unknown methods, with or without a body, and CONNECT get a 405 JSON error (was an empty 400 or a dropped connection)',
    { timeout: 30_000 },
    async () => {
      const auth: [string, string] = ['authorization', `Bearer ${h.apiKey}`];
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
    },
  );

  test('a 100 KB URL is a 414 and a 64 KB header a 431, both JSON (the connection was reset)', { timeout: 30_000 }, async () => {
    const long = await fetch(`${h.url}${V}/microvms/${'a'.repeat(100_000)}`, { headers: { authorization: `Bearer ${h.apiKey}` } });
    assert.equal(long.status, 414);
    assert.equal(long.headers.get('x-amzn-errortype'), 'ValidationException');
    assert.equal(((await long.json()) as { code: string }).code, 'URI_TOO_LONG');
    const big = await fetch(`${h.url}${V}/microvms`, { headers: { authorization: `Bearer ${h.apiKey}`, 'x-big': 'a'.repeat(64 * 1024) } });
    assert.equal(big.status, 431);
    assert.equal(((await big.json()) as { code: string }).code, 'HEADERS_TOO_LARGE');
    // The server still answers on new connections.
    assert.equal((await h.api('GET', `${V}/microvms`)).status, 200);
  });

  test('an empty code-artifact upload (no bytes, or a zip with no files) is 400 and nothing is stored', { timeout: 30_000 }, async () => {
    const artifacts = path.join(h.dataDir, 'artifacts');
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
});
