import assert from 'node:assert/strict';
import { test } from 'node:test';
import { written } from './pagemap.js';

/** The upper 32 bits of a pagemap entry with these flags (and a page frame number in the low bits). */
const upper = (present: boolean, swapped: boolean, fileOrShared: boolean): number =>
  Number(((present ? 1n << 63n : 0n) | (swapped ? 1n << 62n : 0n) | (fileOrShared ? 1n << 61n : 0n) | 0x1234_5678_9n) >> 32n);

test('a present anonymous page was written; a present file page was not', () => {
  assert.equal(written(upper(true, false, false)), true);
  assert.equal(written(upper(true, false, true)), false);
});

test('a swapped-out page was written; an absent page was not', () => {
  assert.equal(written(upper(false, true, false)), true);
  assert.equal(written(upper(false, false, false)), false);
  assert.equal(written(upper(false, false, true)), false);
});
