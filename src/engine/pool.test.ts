import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import type { EngineCore } from './core.js';
import { WARM_UP_REFILL_DELAY_MS, WarmPool } from './pool.js';

/** A pool whose fills are only recorded (prewarm replaced): what is tested is when a refill starts. */
function pool(): { pool: WarmPool; fills: string[] } {
  const core = { closing: false, hosts: { warm: () => [] }, log: () => {} } as unknown as EngineCore;
  const p = new WarmPool(core, 1);
  const fills: string[] = [];
  p.prewarm = async (image: string) => void fills.push(image);
  return { pool: p, fills };
}

test('a refill starts at once, or WARM_UP_REFILL_DELAY_MS later for an image with a warm-up; forgetting the image cancels it', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { pool: p, fills } = pool();
  p.refill('/images/plain');
  assert.deepEqual(fills, ['/images/plain']);

  p.setWarmUp('/images/e2b', async () => {});
  p.refill('/images/e2b');
  p.refill('/images/e2b'); // one refill waits, not two
  t.mock.timers.tick(WARM_UP_REFILL_DELAY_MS - 1);
  assert.deepEqual(fills, ['/images/plain']);
  t.mock.timers.tick(1);
  assert.deepEqual(fills, ['/images/plain', '/images/e2b']);

  p.refill('/images/e2b');
  await p.forget('/images/e2b');
  t.mock.timers.tick(WARM_UP_REFILL_DELAY_MS);
  assert.deepEqual(fills, ['/images/plain', '/images/e2b']);
  // Forgotten with its warm-up: a later refill starts at once.
  p.refill('/images/e2b');
  assert.deepEqual(fills, ['/images/plain', '/images/e2b', '/images/e2b']);
  mock.timers.reset();
});
