import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AccessKeys, ApiKeys, Authenticator, SigV4Verifier, TokenMinter } from '../auth/index.js';
import { Connectors } from '../connectors/index.js';
import type { Engine } from '../engine/index.js';
import { Images } from '../images/index.js';
import { Lifecycle, type RunnableImage, type VmDriver } from '../lifecycle/index.js';
import { LogHub } from '../logs/index.js';
import { MemoryStore } from '../store/index.js';
import { createApi } from './index.js';

/** Images whose lookups take a while, as over a network: two requests are both past their first look at the clientToken before either commits. */
class SlowImages extends Images {
  override async runnable(...args: Parameters<Images['runnable']>): Promise<RunnableImage> {
    await new Promise((r) => setTimeout(r, 20));
    return super.runnable(...args);
  }
}

test('two RunMicrovm requests with one clientToken at once make one VM, and both answer it', { timeout: 10_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-once-'));
  const store = new MemoryStore();
  const runtime = { command: ['/app'], environmentVariables: {}, workingDirectory: '/', port: 8080, memoryMiB: 256, vcpus: 1 };
  await store.putImage({ name: 'demo', arn: 'arn:demo', state: 'CREATED', tags: {}, createdAt: 1, updatedAt: null });
  await store.putVersion({
    imageName: 'demo',
    version: '1.0',
    major: 1,
    state: 'SUCCESSFUL',
    status: 'ACTIVE',
    stateReason: null,
    request: { baseImageArn: 'arn:base', codeArtifact: { uri: 'file:///a.zip' } },
    runtime,
    dir,
    createdAt: 1,
    updatedAt: null,
  });
  const connectors = new Connectors(store);
  // RunMicrovm needs no engine of Images; the launch it starts never ends here (the lifecycle has its own tests).
  const images = new SlowImages({ store, engine: { guest: { dir } } as unknown as Engine, connectors, dataDir: dir });
  const driver = Object.assign(new EventEmitter(), { launch: () => new Promise(() => {}) });
  const lifecycle = new Lifecycle({ store, driver: driver as unknown as VmDriver, logs: new LogHub(dir), images: (n, v) => images.lookup(n, v) });
  const server: Server = createServer(
    createApi({
      store,
      lifecycle,
      images,
      connectors,
      logs: new LogHub(dir),
      auth: new Authenticator(await ApiKeys.open(store, 'key'), new SigV4Verifier({ secretOf: async () => undefined, region: 'us-east-1' })),
      accessKeys: await AccessKeys.open(store),
      tokens: await TokenMinter.open(store),
      domain: 'cella.test',
      minIdleSeconds: 60,
      apiRateScale: 0,
      info: { proxyPort: 0, accelerator: 'tcg', region: 'us-east-1' },
      maxMemoryMiB: 4096,
      capacity: { require: () => {} },
      version: 'test',
    }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/2025-09-09/microvms`;
    const run = async (): Promise<{ status: number; body: { microvmId?: string } }> => {
      const r = await fetch(url, { method: 'POST', headers: { authorization: 'Bearer key' }, body: JSON.stringify({ imageIdentifier: 'demo', clientToken: 'once' }) });
      return { status: r.status, body: (await r.json()) as { microvmId?: string } };
    };
    const [a, b] = await Promise.all([run(), run()]);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(b.body.microvmId, a.body.microvmId);
    assert.equal((await store.liveVms()).length, 1);
  } finally {
    lifecycle.close();
    await new Promise((r) => server.close(r));
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
