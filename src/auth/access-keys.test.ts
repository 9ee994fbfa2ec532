import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { MemoryStore } from '../store/index.js';
import { AccessKeys } from './access-keys.js';

describe('AccessKeys', () => {
  test('the first open makes one key (shown once); later opens make none', async () => {
    const store = new MemoryStore();
    const first = await AccessKeys.open(store);
    assert.ok(first.created);
    assert.match(first.created.accessKeyId, /^CELLA[A-Z2-7]{16}$/);
    assert.equal(first.created.secretAccessKey.length, 40);
    const again = await AccessKeys.open(store);
    assert.equal(again.created, undefined);
    assert.deepEqual(
      (await again.list()).map((k) => k.accessKeyId),
      [first.created.accessKeyId],
    );
    assert.equal(await again.secretOf(first.created.accessKeyId), first.created.secretAccessKey);
  });

  test('the store holds the secret sealed, never in the clear; a sealed secret opens only as its own key', async () => {
    const store = new MemoryStore();
    const keys = await AccessKeys.open(store);
    const a = await keys.create();
    const b = await keys.create();
    const rec = await store.getAccessKey(a.accessKeyId);
    assert.ok(rec);
    assert.ok(!rec.sealedSecret.includes(Buffer.from(a.secretAccessKey)));
    assert.equal(await keys.secretOf(a.accessKeyId), a.secretAccessKey);
    // b's row with a's sealed secret: the associated data (the id) does not match.
    await store.deleteAccessKey(b.accessKeyId);
    await store.putAccessKey({ id: b.accessKeyId, sealedSecret: rec.sealedSecret, createdAt: 1 });
    await assert.rejects(keys.secretOf(b.accessKeyId), (e) => isCellaError(e, 'INTERNAL'));
  });

  test('revoke: the key is unknown from then on; an unknown id is NOT_FOUND', async () => {
    const keys = await AccessKeys.open(new MemoryStore());
    const k = await keys.create();
    await keys.revoke(k.accessKeyId);
    assert.equal(await keys.secretOf(k.accessKeyId), undefined);
    await assert.rejects(keys.revoke(k.accessKeyId), (e) => isCellaError(e, 'NOT_FOUND'));
  });

  test("the environment's pair is accepted, not listed, not revocable; half a pair or a bad id is refused", async () => {
    const env = { accessKeyId: 'CELLAENVKEY000000001', secretAccessKey: 'env-secret' };
    const keys = await AccessKeys.open(new MemoryStore(), env);
    assert.equal(await keys.secretOf(env.accessKeyId), 'env-secret');
    assert.ok(!(await keys.list()).some((k) => k.accessKeyId === env.accessKeyId));
    await assert.rejects(keys.revoke(env.accessKeyId), (e) => isCellaError(e, 'INVALID_ARGUMENT'));
    await assert.rejects(AccessKeys.open(new MemoryStore(), { accessKeyId: env.accessKeyId }), (e) => isCellaError(e, 'INVALID_ARGUMENT'));
    await assert.rejects(AccessKeys.open(new MemoryStore(), { accessKeyId: 'short', secretAccessKey: 's' }), (e) => isCellaError(e, 'INVALID_ARGUMENT'));
    const none = await AccessKeys.open(new MemoryStore(), { accessKeyId: '', secretAccessKey: '' });
    assert.equal(await none.secretOf(''), undefined);
  });
});
