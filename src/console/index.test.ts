import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { consoleHandler, isConsolePath } from './index.js';

describe('console files', () => {
  let dir: string;
  let server: Server;
  let base: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'console-'));
    writeFileSync(path.join(dir, 'index.html'), '<!doctype html><script type="module" src="app.js"></script>');
    writeFileSync(path.join(dir, 'app.js'), 'export {};');
    writeFileSync(path.join(tmpdir(), 'console-secret.txt'), 'secret');
    server = createServer(consoleHandler(dir));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('serves the bundle with a strict CSP and the right types', { timeout: 10_000 }, async () => {
    const index = await fetch(`${base}/console/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') ?? '', /text\/html/);
    assert.match(index.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.doesNotMatch(index.headers.get('content-security-policy') ?? '', /unsafe/);
    const js = await fetch(`${base}/console/app.js`);
    assert.match(js.headers.get('content-type') ?? '', /javascript/);
    assert.equal((await fetch(`${base}/console`, { redirect: 'manual' })).headers.get('location'), '/console/');
  });

  test('anything else is refused, and no path reaches the file system', { timeout: 10_000 }, async () => {
    assert.equal((await fetch(`${base}/console/nope.js`)).status, 404);
    assert.equal((await fetch(`${base}/console/%2e%2e%2fconsole-secret.txt`)).status, 404);
    assert.equal((await fetch(`${base}/console/app.js`, { method: 'POST' })).status, 405);
    assert.equal(isConsolePath('/consoles'), false);
    assert.equal(isConsolePath('/console/x?y'), true);
  });

  test('an unbuilt console says how to build it', { timeout: 10_000 }, async () => {
    const s = createServer(consoleHandler(path.join(dir, 'missing')));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const r = await fetch(`http://127.0.0.1:${(s.address() as AddressInfo).port}/console/`);
    assert.equal(r.status, 404);
    assert.match(await r.text(), /npm run build/);
    s.close();
  });
});
