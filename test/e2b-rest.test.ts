/**
 * The unmodified `e2b` SDK against a real `cella server` and a real VM,
 * with only E2B_API_URL and E2B_API_KEY changed: create, list, info,
 * setTimeout, pause, connect (resume) and kill, and bad input. The SDK's
 * create and connect call REST only; envd (commands, files) is another suite.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AuthenticationError, Sandbox, SandboxNotFoundError } from 'e2b';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, createImage, shutdown } from './control-helpers.js';
import { tempDataDir } from './helpers.js';

describe('E2B REST facade with the real SDK', { concurrency: false }, () => {
  let server: CellaServer;
  let opts: { apiKey: string; apiUrl: string };

  before(async () => {
    server = await startServer({ dataDir: tempDataDir('e2b-rest'), port: 0, proxyPort: 0, apiKey: API_KEY, resumeWindowSeconds: 0, log: () => {} });
    opts = { apiKey: API_KEY, apiUrl: `${server.url}/e2b` };
    const { build } = await createImage(server.url, 'demo');
    assert.equal(build.buildState, 'SUCCESSFUL');
  });

  after(async () => {
    if (server) await shutdown(server);
  });

  test('create, list, info, setTimeout, pause, connect (resume) and kill one sandbox', { timeout: 240_000 }, async () => {
    const sbx = await Sandbox.create('demo', { ...opts, metadata: { suite: 'e2b-rest' }, timeoutMs: 120_000 });
    const id = sbx.sandboxId;
    // The sandbox is a Cella MicroVM, running once create answers.
    assert.equal((await server.store.getVm(id))?.state, 'RUNNING');
    const listed = Sandbox.list({ ...opts, query: { metadata: { suite: 'e2b-rest' } } });
    assert.deepEqual(
      (await listed.nextItems()).map((s) => [s.sandboxId, s.state, s.templateId]),
      [[id, 'running', 'demo']],
    );
    const info = await Sandbox.getInfo(id, opts);
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, { suite: 'e2b-rest' });

    await sbx.setTimeout(60_000);
    const endAt = (await sbx.getInfo()).endAt.getTime();
    assert.ok(endAt <= Date.now() + 60_000, 'setTimeout shortened the timeout');

    assert.equal(await sbx.pause(), true);
    assert.equal((await server.store.getVm(id))?.state, 'SUSPENDED');
    assert.equal((await sbx.getInfo()).state, 'paused');
    assert.equal(await sbx.pause(), false, 'already paused');

    const again = await Sandbox.connect(id, { ...opts, timeoutMs: 300_000 });
    assert.equal(again.sandboxId, id);
    assert.equal((await server.store.getVm(id))?.state, 'RUNNING');
    assert.ok((await sbx.getInfo()).endAt.getTime() > endAt, 'connect extended the timeout');

    assert.equal(await sbx.kill(), true);
    assert.equal(await sbx.kill(), false);
    await assert.rejects(sbx.getInfo(), SandboxNotFoundError);
    assert.ok(['TERMINATING', 'TERMINATED'].includes((await server.store.getVm(id))?.state ?? ''));
  });

  test('bad input: unknown template, bad key, unknown id; nothing is launched', { timeout: 60_000 }, async () => {
    // The first test's kill ends in the background: settled first, so the count below moves only if this test launched something.
    await server.lifecycle.settle();
    const before = (await server.store.liveVms()).length;
    await assert.rejects(Sandbox.create('base-missing', opts), /404: template base-missing not found/);
    await assert.rejects(Sandbox.create('demo', { ...opts, apiKey: 'cella_not-a-key' }), AuthenticationError);
    await assert.rejects(Sandbox.connect('mvm-00000000-0000-0000-0000-000000000000', opts), SandboxNotFoundError);
    assert.equal(await Sandbox.kill('mvm-00000000-0000-0000-0000-000000000000', opts), false);
    assert.equal((await server.store.liveVms()).length, before);
  });
});
