/**
 * The endpoint port's connection limits, against a real cellad on port 0
 * with no VM. The API's own edges need no engine: test/control-plane/.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY } from './control-helpers.js';
import { closed, tcpTo } from './fixtures/sockets.js';
import { tempDataDir } from './helpers.js';

const PER_CLIENT = 8;

describe('endpoint port edges (no VM)', { concurrency: false }, () => {
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
