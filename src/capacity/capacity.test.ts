import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { DiskCapacity, diskSpace } from './index.js';

test('below the floor, require() refuses with INSUFFICIENT_CAPACITY and a retry hint; above it, it lets work through', () => {
  const free = diskSpace(tmpdir()).freeBytes;
  const low = new DiskCapacity({ dir: tmpdir(), minFreeBytes: free * 4 });
  assert.equal(low.isLow, true);
  assert.throws(
    () => low.require('RunMicrovm'),
    (e) => isCellaError(e, 'INSUFFICIENT_CAPACITY') && e.details.retryAfterSeconds === 30 && /RunMicrovm refused/.test(e.message),
  );
  const ok = new DiskCapacity({ dir: tmpdir(), minFreeBytes: 1 });
  assert.equal(ok.isLow, false);
  ok.require('RunMicrovm');
});

test("crossing the floor is an event: 'low' once, then 'ok' once", () => {
  let freeBytes = 100;
  const cap = new DiskCapacity({ dir: '/', minFreeBytes: 50, read: () => ({ freeBytes, totalBytes: 1000 }) });
  const seen: string[] = [];
  cap.on('low', () => seen.push('low'));
  cap.on('ok', () => seen.push('ok'));
  freeBytes = 10;
  cap.check();
  cap.check();
  assert.equal(cap.isLow, true);
  freeBytes = 60;
  cap.check();
  assert.deepEqual(seen, ['low', 'ok']);
});

test('the default floor is the larger of 1 GiB and 2 % of the file system', () => {
  const space = (totalBytes: number) => () => ({ freeBytes: totalBytes, totalBytes });
  assert.equal(new DiskCapacity({ dir: '/', read: space(10 * 1024 ** 3) }).minFreeBytes, 1024 ** 3);
  assert.equal(new DiskCapacity({ dir: '/', read: space(100 * 1024 ** 3) }).minFreeBytes, 2 * 1024 ** 3);
});
