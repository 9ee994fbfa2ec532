import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CellaError } from '../contract/index.js';
import { managedPrewarm } from './managed-images.js';

test('ready images have their warm pools filled one at a time, in order; a failure only logs', async () => {
  const calls: string[] = [];
  const prepared: string[] = [];
  let running = 0;
  const lines: string[] = [];
  let release!: () => void;
  const allDone = new Promise<void>((r) => (release = r));
  const engine = {
    prewarm: async (dir: string) => {
      assert.equal(running++, 0, 'one fill at a time');
      assert.equal(prepared.at(-1), dir, 'its pool is readied before it is filled');
      calls.push(dir);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      if (dir === '/images/broken') throw new Error('restore failed');
      if (calls.length === 3) release();
    },
  };
  const images = {
    runnable: async (name: string) => {
      if (name === 'gone') throw new CellaError('NOT_FOUND', 'image gone has none');
      return { name, arn: '', version: '1.0', dir: `/images/${name}`, config: {} as never };
    },
  };
  const ready = managedPrewarm(
    engine,
    images,
    (l) => lines.push(l),
    (image) => prepared.push(image.dir),
  );
  for (const name of ['base', 'gone', 'broken', 'code-interpreter-v1']) ready(name);
  await allDone;
  assert.deepEqual(calls, ['/images/base', '/images/broken', '/images/code-interpreter-v1']);
  assert.deepEqual(prepared, calls);
  assert.deepEqual(lines, ['warm pool for image "gone": image gone has none', 'warm pool for image "broken": restore failed']);
});
