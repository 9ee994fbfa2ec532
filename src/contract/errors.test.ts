import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CellaError, fromErrno, httpError } from './index.js';

test('a full disk, however it surfaces, is the contract InsufficientCapacityException, never an INTERNAL 500', () => {
  for (const code of ['ENOSPC', 'EDQUOT', 'SQLITE_FULL']) {
    const err = Object.assign(new Error('database or disk is full'), { code });
    const h = httpError(err);
    assert.equal(h.status, 500);
    assert.equal(h.headers['x-amzn-errortype'], 'InsufficientCapacityException');
    assert.equal(JSON.parse(h.body).code, 'INSUFFICIENT_CAPACITY');
    assert.equal(h.headers['retry-after'], '30');
  }
  const other = Object.assign(new Error('boom'), { code: 'EIO' });
  assert.equal(fromErrno(other), other);
  const typed = new CellaError('NOT_FOUND', 'x');
  assert.equal(fromErrno(typed), typed);
  assert.equal(JSON.parse(httpError(other).body).code, 'INTERNAL');
});
