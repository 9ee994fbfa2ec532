import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import type { EngineCore } from './core.js';
import { REFILL_DELAY_MS, WARM_UP_REFILL_DELAY_MS, WarmPool } from './pool.js';

/** A pool whose fills are only recorded (prewarm replaced): what is tested is when a refill starts. */
function pool(): { pool: WarmPool; fills: string[] } {
  const core = { closing: false, hosts: { warm: () => [] }, log: () => {} } as unknown as EngineCore;
  const p = new WarmPool(core, 1);
  const fills: string[] = [];
  p.prewarm = async (image: string) => void fills.push(image);
  return { pool: p, fills };
}

test('a refill starts REFILL_DELAY_MS later, or WARM_UP_REFILL_DELAY_MS for an image with a warm-up; forgetting the image cancels it', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { pool: p, fills } = pool();
  assert.ok(REFILL_DELAY_MS < WARM_UP_REFILL_DELAY_MS);
  p.refill('/images/plain');
  t.mock.timers.tick(REFILL_DELAY_MS - 1);
  assert.deepEqual(fills, []);
  t.mock.timers.tick(1);
  assert.deepEqual(fills, ['/images/plain']);

  p.setWarmUp('/images/e2b', async () => {});
  p.refill('/images/e2b');
  p.refill('/images/e2b'); // one refill waits, not two
  t.mock.timers.tick(REFILL_DELAY_MS);
  t.mock.timers.tick(WARM_UP_REFILL_DELAY_MS - REFILL_DELAY_MS - 1);
  assert.deepEqual(fills, ['/images/plain']);
  t.mock.timers.tick(1);
  assert.deepEqual(fills, ['/images/plain', '/images/e2b']);

  p.refill('/images/e2b');
  await p.forget('/images/e2b');
  t.mock.timers.tick(WARM_UP_REFILL_DELAY_MS);
  assert.deepEqual(fills, ['/images/plain', '/images/e2b']);
  // Forgotten with its warm-up: a later refill waits as any image's.
  p.refill('/images/e2b');
  t.mock.timers.tick(REFILL_DELAY_MS);
  assert.deepEqual(fills, ['/images/plain', '/images/e2b', '/images/e2b']);
  mock.timers.reset();
});

test('an image may keep its own number of warm clones with its warm-up; none while the engine keeps none', async () => {
  const made = new Map<string, number>();
  const poolOf = (target: number): WarmPool => {
    const core = {
      closing: false,
      hosts: { warm: (dir: string) => Array.from({ length: made.get(dir) ?? 0 }) },
      log: () => {},
    } as unknown as EngineCore;
    const p = new WarmPool(core, target);
    // Only the count is under test: a "clone" is a number in `made`.
    (p as unknown as { makeWarm: (dir: string) => Promise<void> }).makeWarm = async (dir) => void made.set(dir, (made.get(dir) ?? 0) + 1);
    return p;
  };
  const p = poolOf(1);
  p.setWarmUp('/images/e2b', async () => {}, 3);
  await p.prewarm('/images/e2b');
  await p.prewarm('/images/plain');
  assert.equal(made.get('/images/e2b'), 3);
  assert.equal(made.get('/images/plain'), 1);
  // Without its warm-up, the image keeps the engine's number again.
  p.setWarmUp('/images/e2b-2', async () => {}, 3);
  p.setWarmUp('/images/e2b-2', undefined);
  await p.prewarm('/images/e2b-2');
  assert.equal(made.get('/images/e2b-2'), 1);
  const off = poolOf(0);
  off.setWarmUp('/images/off', async () => {}, 3);
  await off.prewarm('/images/off');
  assert.equal(made.get('/images/off'), undefined);
});
