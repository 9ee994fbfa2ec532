import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { Throttle } from './throttle.js';

test('a burst of the contract rate passes, the next request is throttled, and time refills the bucket', () => {
  let now = 0;
  const t = new Throttle(1, () => now);
  for (let i = 0; i < 2; i++) t.take('k', 'SuspendMicrovm');
  assert.throws(
    () => t.take('k', 'SuspendMicrovm'),
    (e) => isCellaError(e, 'THROTTLED') && e.details.retryAfterSeconds === 1,
  );
  t.take('other-caller', 'SuspendMicrovm');
  t.take('k', 'GetMicrovm');
  now += 500;
  t.take('k', 'SuspendMicrovm');
  assert.throws(
    () => t.take('k', 'SuspendMicrovm'),
    (e) => isCellaError(e, 'THROTTLED'),
  );
});

test('scale multiplies the rates and 0 turns throttling off', () => {
  const ten = new Throttle(10, () => 0);
  for (let i = 0; i < 20; i++) ten.take('k', 'SuspendMicrovm');
  assert.throws(
    () => ten.take('k', 'SuspendMicrovm'),
    (e) => isCellaError(e, 'THROTTLED'),
  );
  const off = new Throttle(0, () => 0);
  for (let i = 0; i < 1000; i++) off.take('k', 'SuspendMicrovm');
});
