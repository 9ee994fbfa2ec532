import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCellaError } from './errors.js';
import { checkTagKey, checkTags, MAX_TAGS } from './tags.js';

const invalid = (e: unknown): boolean => isCellaError(e, 'INVALID_ARGUMENT');

test('tags within the limits pass: 50 of them, 128-character keys, 256-character values, letters of any script', () => {
  const many = Object.fromEntries(Array.from({ length: MAX_TAGS }, (_, i) => [`k${i}`, `v${i}`]));
  checkTags(many, 'Tags');
  checkTags({ ['k'.repeat(128)]: 'v'.repeat(256), 'équipe/Ω': '', 'a b_.:/=+-@': 'x y_.:/=+-@', 名前: '値' }, 'Tags');
  checkTagKey('awsome', 'tagKeys');
});

test('tags beyond the limits are refused: count, key and value lengths, characters, the aws: prefix', () => {
  const cases: Record<string, string>[] = [
    Object.fromEntries(Array.from({ length: MAX_TAGS + 1 }, (_, i) => [`k${i}`, 'v'])),
    { '': 'v' },
    { ['k'.repeat(129)]: 'v' },
    { k: 'v'.repeat(257) },
    { 'a;b': 'v' },
    { k: 'a\nb' },
    { 'aws:team': 'x' },
    { 'AWS:team': 'x' },
  ];
  for (const tags of cases) assert.throws(() => checkTags(tags, 'Tags'), invalid, JSON.stringify(tags).slice(0, 80));
  for (const key of ['', 'aws:x', 'k'.repeat(129), 'a*b']) assert.throws(() => checkTagKey(key, 'tagKeys'), invalid, key);
});
