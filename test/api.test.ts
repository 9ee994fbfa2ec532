/**
 * The endpoint port's connection limits and the server's region and
 * account, against a real cellad on port 0 with no VM. The API's own edges
 * need no engine: test/control-plane/.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { isCellaError } from '../src/contract/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, api } from './control-helpers.js';
import { closed, tcpTo } from './fixtures/sockets.js';
import { tempDataDir } from './helpers.js';

const PER_CLIENT = 8;

describe('endpoint port edges (no VM)', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;

  before(async () => {
    dir = tempDataDir('api');
    server = await startServer({
      dataDir: dir,
      port: 0,
      proxyPort: 0,
      apiKey: API_KEY,
      demoImage: false,
      apiRateScale: 0,
      endpointConnectionsPerClient: PER_CLIENT,
      log: () => {},
    });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Regression (issue 11): 300 slowloris connections from one client were held on the endpoint port for 25 s and more.
  test('the endpoint port closes connections beyond the per-client limit, and one that sends no request', { timeout: 60_000 }, async () => {
    const held = await Promise.all(Array.from({ length: PER_CLIENT }, () => tcpTo(server.proxyPort)));
    const extra = await tcpTo(server.proxyPort);
    await closed(extra);
    assert.ok(
      held.every((s) => !s.destroyed),
      'the first ones are still open',
    );
    // None of them sends a request: each is closed at the deadline for a first request.
    await Promise.all(held.map(closed));
  });
});

test('region and account: GetServerInfo reports them; a data directory keeps those it was first started with', { timeout: 120_000 }, async () => {
  const dir = tempDataDir('api-region');
  const opts = { dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, demoImage: false, log: () => {} };
  try {
    const first = await startServer({ ...opts, region: 'eu-west-1', accountId: '123456789012' });
    try {
      const info = await api<{ region: string; accountId: string }>(first.url, 'GET', '/cella/v1/info');
      assert.deepEqual([info.body.region, info.body.accountId], ['eu-west-1', '123456789012']);
      const created = await api<{ networkConnectorArn: string }>(first.url, 'POST', '/cella/v1/network-connectors', {
        name: 'c',
        egress: { domains: ['example.com'] },
      });
      assert.equal(created.body.networkConnectorArn, 'arn:aws:lambda:eu-west-1:123456789012:network-connector:c');
      const elsewhere = await api<{ code: string }>(
        first.url,
        'GET',
        `/cella/v1/network-connectors/${encodeURIComponent('arn:aws:lambda:us-east-1:123456789012:network-connector:c')}`,
      );
      assert.deepEqual([elsewhere.status, elsewhere.type, elsewhere.body.code], [400, 'ValidationException', 'INVALID_ARGUMENT']);
    } finally {
      await first.close();
    }
    await assert.rejects(
      startServer(opts),
      (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && /--region eu-west-1 --account-id 123456789012/.test(e.message),
    );
    await assert.rejects(startServer({ ...opts, region: 'local' }), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'));
    const again = await startServer({ ...opts, region: 'eu-west-1', accountId: '123456789012' });
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
