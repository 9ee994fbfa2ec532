import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { NamePosition, OffsetPosition, VmPosition, decodeCursor, encodeCursor, keysetPage, offsetPage, startOf } from './cursor.js';

const refused = (fn: () => unknown, what: string): void => {
  assert.throws(fn, (err) => isCellaError(err, 'INVALID_ARGUMENT'), what);
};

test('a token decodes to the position it was made from, in the list that made it', () => {
  const vm = { c: 1_700_000_000_000, i: 'mvm-1' };
  assert.deepEqual(decodeCursor('ListMicrovms', VmPosition, encodeCursor('ListMicrovms', VmPosition, vm)), vm);
  assert.deepEqual(decodeCursor('ListMicrovmImages', NamePosition, encodeCursor('ListMicrovmImages', NamePosition, { n: 'démo' })), { n: 'démo' });
  const t = encodeCursor('ListNetworkConnectors', OffsetPosition, { o: 50 });
  assert.match(t, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeCursor('ListNetworkConnectors', OffsetPosition, t), { o: 50 });
});

// Regression (issue 11): `x`, `A`, `MA` ("0"), `IA` (" ") and `0` decoded to offset 0 and answered the first page.
test('garbage nextToken is refused, never read as the first page', () => {
  for (const token of ['x', 'A', 'AA', 'MA', 'IA', 'ICA', '0', 'abc', 'garbage', 'eyJ9', 'e30', 'W10', '%ZZ', 'a b', 'MTA=', 'MTA', '..', '\u0000']) {
    refused(() => decodeCursor('ListNetworkConnectors', OffsetPosition, token), token);
  }
});

test('a token of another list, of another shape, or not in its canonical spelling is refused', () => {
  const t = encodeCursor('ListNetworkConnectors', OffsetPosition, { o: 2 });
  refused(() => decodeCursor('ListManagedMicrovmImages', OffsetPosition, t), 'other list');
  refused(() => decodeCursor('ListNetworkConnectors', VmPosition, t), 'other shape');
  refused(() => decodeCursor('ListNetworkConnectors', OffsetPosition, `${t}=`), 'padding');
  refused(() => decodeCursor('ListNetworkConnectors', OffsetPosition, `${t}A`), 'trailing bits');
  const forge = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  refused(() => decodeCursor('L', OffsetPosition, forge(['L', { o: 0 }])), 'offset 0');
  refused(() => decodeCursor('L', OffsetPosition, forge(['L', { o: 1.5 }])), 'fractional offset');
  refused(() => decodeCursor('L', OffsetPosition, forge(['L', { o: 1, x: 1 }])), 'extra field');
  refused(() => decodeCursor('L', OffsetPosition, forge(['L', { o: 1 }, 3])), 'extra element');
  refused(() => decodeCursor('L', OffsetPosition, forge({ o: 1 })), 'the old bare form');
  refused(() => decodeCursor('L', VmPosition, forge(['L', { c: 'x', i: 'mvm' }])), 'time not a number');
});

test('encoding a position that does not fit its shape is a bug, not a token', () => {
  assert.throws(() => encodeCursor('L', OffsetPosition, { o: 0 }));
});

test('offsetPage: pages a list in memory, with a cursor while items are left and none on the last page', () => {
  const all = ['a', 'b', 'c'];
  const first = offsetPage('ListAccessKeys', undefined, 2, all, (s) => s.toUpperCase());
  assert.deepEqual(first.items, ['A', 'B']);
  assert.ok(first.nextToken);
  const second = offsetPage('ListAccessKeys', decodeCursor('ListAccessKeys', OffsetPosition, first.nextToken), 2, all, (s) => s);
  assert.deepEqual(second, { items: ['c'] });
});

test('keysetPage: one item fetched beyond the limit gives a cursor at the last item kept; none otherwise', () => {
  const page = keysetPage('ListMicrovmImages', 2, [{ name: 'a' }, { name: 'b' }, { name: 'c' }], (last) => ({ n: last.name }));
  assert.deepEqual(page.items, [{ name: 'a' }, { name: 'b' }]);
  assert.deepEqual(decodeCursor('ListMicrovmImages', NamePosition, page.nextToken ?? ''), { n: 'b' });
  assert.deepEqual(keysetPage('ListMicrovmImages', 2, [{ name: 'a' }, { name: 'b' }], (last) => ({ n: last.name })).nextToken, undefined);
});

test('startOf: a List reads its own cursor, refuses another List’s, and an operation that is no List has no start', () => {
  const cursor = encodeCursor('ListMicrovms', VmPosition, { c: 1, i: 'mvm-1' });
  assert.deepEqual(startOf('ListMicrovms', cursor), { c: 1, i: 'mvm-1' });
  refused(() => startOf('ListAccessKeys', cursor), 'a cursor of another List');
  assert.equal(startOf('GetMicrovm', cursor), undefined);
  assert.equal(startOf('ListMicrovms', undefined), undefined);
});
