import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Connectors } from '../connectors/index.js';
import { Arns, type CreateImageRequest, type ImageState, isCellaError } from '../contract/index.js';
import type { Engine } from '../engine/index.js';
import { MemoryStore, type ImageVersionRecord } from '../store/index.js';
import { DEFAULT_IMAGE_QUOTAS, type ImageQuotas, Images } from './index.js';

/** Images over a MemoryStore, with one managed base and no engine: builds are never run here, only recorded. */
function setup(quotas?: Partial<ImageQuotas>): { images: Images; store: MemoryStore; done: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-images-'));
  const base = path.join(dir, 'guest', 'bases', 'busybox');
  mkdirSync(path.join(base, 'tree'), { recursive: true });
  writeFileSync(
    path.join(base, 'base.json'),
    JSON.stringify({ name: 'busybox', description: 'd', env: { PATH: '/bin' }, createdAt: '2025-01-01T00:00:00.000Z', sizeBytes: 1, inputsSha256: 'x' }),
  );
  const store = new MemoryStore();
  const engine = { guest: { dir: path.join(dir, 'guest') } } as unknown as Engine;
  const arns = new Arns();
  const images = new Images({ store, engine, connectors: new Connectors(store, arns), dataDir: dir, arns, ...(quotas ? { quotas } : {}) });
  return { images, store, done: () => rmSync(dir, { recursive: true, force: true }) };
}

const request = (name: string): CreateImageRequest => ({
  name,
  baseImageArn: new Arns().managedImage('busybox'),
  codeArtifact: { uri: 'file:///tmp/app.zip' },
});
const RUNTIME = { command: ['/app'], environmentVariables: {}, workingDirectory: '/', port: 8080, memoryMiB: 256, vcpus: 1 };

/** What a build's end writes (Images.finish), without running one. */
async function setVersion(store: MemoryStore, name: string, version: string, patch: Partial<ImageVersionRecord>): Promise<void> {
  const v = (await store.getVersion(name, version)) as ImageVersionRecord;
  await store.putVersion({ ...v, ...patch });
}

async function setImage(store: MemoryStore, name: string, state: ImageState): Promise<void> {
  const img = await store.getImage(name);
  assert.ok(img);
  await store.putImage({ ...img, state });
}

test('latestActiveImageVersion and latestFailedImageVersion follow the versions: built, failed, made INACTIVE', async () => {
  const { images, store, done } = setup();
  try {
    await images.create(request('a'));
    assert.deepEqual(await images.latestVersions('a'), {}, 'nothing built yet');
    await setVersion(store, 'a', '1.0', { state: 'SUCCESSFUL', runtime: RUNTIME });
    await setImage(store, 'a', 'CREATED');
    await images.update('a', request('a'));
    await setVersion(store, 'a', '2.0', { state: 'FAILED' });
    await setImage(store, 'a', 'UPDATE_FAILED');
    assert.deepEqual(await images.latestVersions('a'), { latestActiveImageVersion: '1.0', latestFailedImageVersion: '2.0' });
    await images.update('a', request('a'));
    await setVersion(store, 'a', '3.0', { state: 'SUCCESSFUL', runtime: RUNTIME });
    assert.deepEqual(await images.latestVersions('a'), { latestActiveImageVersion: '3.0', latestFailedImageVersion: '2.0' });
    await images.setStatus('a', '3.0', 'INACTIVE');
    assert.deepEqual(
      await images.latestVersions('a'),
      { latestActiveImageVersion: '1.0', latestFailedImageVersion: '2.0' },
      'an INACTIVE version is not the active one',
    );
  } finally {
    done();
  }
});

test('only a CREATED or UPDATED image runs: any other state is ResourceNotFound', async () => {
  const { images, store, done } = setup();
  try {
    await images.create(request('a'));
    await setVersion(store, 'a', '1.0', { state: 'SUCCESSFUL', runtime: RUNTIME });
    for (const state of ['CREATED', 'UPDATED'] as const) {
      await setImage(store, 'a', state);
      assert.equal((await images.runnable('a')).version, '1.0', state);
    }
    for (const state of ['CREATING', 'CREATE_FAILED', 'UPDATING', 'UPDATE_FAILED', 'DELETING', 'DELETE_FAILED'] as const) {
      await setImage(store, 'a', state);
      await assert.rejects(
        images.runnable('a'),
        (e) => isCellaError(e, 'NOT_FOUND') && e.httpStatus === 404 && e.details.resourceType === 'MicrovmImage',
        state,
      );
      await assert.rejects(images.runnable('a', '1.0'), (e) => isCellaError(e, 'NOT_FOUND'), `${state}, pinned`);
    }
  } finally {
    done();
  }
});

test('the image quotas refuse with ServiceQuotaExceeded and its quotaCode, and write nothing', async () => {
  const { images, store, done } = setup({ images: 2, versionsPerImage: 2, concurrentBuilds: 3 });
  const quota = (code: string) => (e: unknown) =>
    isCellaError(e, 'QUOTA_EXCEEDED') &&
    e.httpStatus === 402 &&
    e.type === 'ServiceQuotaExceededException' &&
    e.details.quotaCode === code &&
    e.details.serviceCode === 'cella';
  try {
    await images.create(request('a'));
    await images.create(request('b'));
    await assert.rejects(images.create(request('c')), quota('microvm-images'));
    assert.deepEqual(
      (await store.listImages()).map((i) => i.name),
      ['a', 'b'],
    );

    // Two builds queued (a 1.0, b 1.0); a third may start, a fourth may not.
    await setImage(store, 'a', 'CREATED');
    await setImage(store, 'b', 'CREATED');
    await images.update('a', request('a'));
    await assert.rejects(images.update('b', request('b')), quota('concurrent-image-builds'));
    assert.equal((await store.listVersions('b')).length, 1);
    assert.equal((await store.getImage('b'))?.state, 'CREATED', 'the refused update left the image as it was');

    // a has 2 versions: the quota. A finished build frees a slot, but not a version.
    await setVersion(store, 'a', '1.0', { state: 'SUCCESSFUL', runtime: RUNTIME });
    await setImage(store, 'a', 'UPDATED');
    await assert.rejects(images.update('a', request('a')), quota('microvm-image-versions'));
    assert.equal((await store.listVersions('a')).length, 2);
    await images.update('b', request('b'));
  } finally {
    done();
  }
});

test("the default quotas are the contract's: 100 images, 50 versions per image, 5 builds at once", () => {
  assert.deepEqual(DEFAULT_IMAGE_QUOTAS, { images: 100, versionsPerImage: 50, concurrentBuilds: 5 });
});
