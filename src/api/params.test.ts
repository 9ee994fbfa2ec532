import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TSchema } from '@sinclair/typebox';
import { isCellaError, ListImageBuildsQuery, ListQuery, LogsQuery, UntagResourceQuery } from '../contract/index.js';
import { decodePathParam, queryObject, requestUrl } from './params.js';

const invalid = (err: unknown): boolean => isCellaError(err, 'INVALID_ARGUMENT');

// Regression (issue 11): decodeURIComponent threw `URI malformed`, answered as a 500 INTERNAL.
test('malformed percent-encoding in a path parameter is INVALID_ARGUMENT', () => {
  for (const raw of ['%', '%Z', '%ZZ', '%C0%AF', '%FF%FE', '%E0%80%80', '%ED%A0%80', 'a%', '%%']) {
    assert.throws(() => decodePathParam('microvmIdentifier', raw), invalid, raw);
  }
});

test('a path parameter decodes once, within 1 to 256 characters and without control characters', () => {
  assert.equal(decodePathParam('id', 'mvm-1'), 'mvm-1');
  assert.equal(decodePathParam('id', 'a%2Fb%20c'), 'a/b c');
  assert.equal(decodePathParam('id', '%F0%9F%98%80'), '😀');
  assert.equal(decodePathParam('id', '%2541'), '%41');
  assert.equal(decodePathParam('id', 'x'.repeat(256)), 'x'.repeat(256));
  for (const raw of ['x'.repeat(257), '%00', 'a%0Ab', '%7F']) assert.throws(() => decodePathParam('id', raw), invalid, raw);
});

// Regression (issue 11): Value.Convert turned `1.5` and `true` into 1, so seven List routes accepted them.
test('integers and booleans in the query are read only in their plain spelling', () => {
  const q = (s: string, schema: TSchema = ListQuery) => queryObject(new URLSearchParams(s), schema);
  assert.deepEqual(q('maxResults=7&nextToken=abc'), { maxResults: 7, nextToken: 'abc' });
  assert.deepEqual(q('maxResults=1.5'), { maxResults: '1.5' });
  assert.deepEqual(q('maxResults=true'), { maxResults: 'true' });
  assert.deepEqual(q('maxResults=1e1'), { maxResults: '1e1' });
  assert.deepEqual(q('maxResults=%201'), { maxResults: ' 1' });
  assert.deepEqual(q('maxResults=99999999999999999999'), { maxResults: '99999999999999999999' });
  assert.deepEqual(q('follow=true', LogsQuery), { follow: true });
  assert.deepEqual(q('follow=1', LogsQuery), { follow: '1' });
  assert.deepEqual(q('chipset=123', ListImageBuildsQuery), { chipset: '123' });
  assert.ok(Object.hasOwn(q('__proto__=1'), '__proto__'));
  assert.throws(() => q('maxResults=1&maxResults=2'), invalid);
});

test('a list in the query is its parameter repeated, in order (UntagResource tagKeys)', () => {
  const q = (s: string) => queryObject(new URLSearchParams(s), UntagResourceQuery);
  assert.deepEqual(q('tagKeys=a'), { tagKeys: ['a'] });
  assert.deepEqual(q('tagKeys=b&tagKeys=a&tagKeys=b'), { tagKeys: ['b', 'a', 'b'] });
  assert.deepEqual(q('tagKeys=a&other=1&other2=2'), { tagKeys: ['a'], other: '1', other2: '2' });
  assert.throws(() => queryObject(new URLSearchParams('x=1&tagKeys=a&x=2'), UntagResourceQuery), invalid);
});

test('the request target: origin and absolute form; a leading // is a path, not a host', () => {
  assert.equal(requestUrl('/a/b?x=1').pathname, '/a/b');
  assert.equal(requestUrl('//evil/a').pathname, '//evil/a');
  assert.equal(requestUrl('//[').pathname, '//[');
  assert.equal(requestUrl('http://h/a%ZZ?q').pathname, '/a%ZZ');
  for (const t of ['*', 'http://[', 'nope']) assert.throws(() => requestUrl(t), invalid, t);
});
