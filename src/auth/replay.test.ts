import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ReplayGuard } from './replay.js';

describe('ReplayGuard', () => {
  test('a signature is fresh once, then replayed for as long as its window lasts', () => {
    const g = new ReplayGuard(1000, 10);
    assert.equal(g.claim('a', 100, 100), 'fresh');
    assert.equal(g.claim('a', 100, 500), 'replayed');
    assert.equal(g.claim('b', 100, 500), 'fresh');
  });

  test('signatures whose window has passed are forgotten (the skew check refuses them by then)', () => {
    const g = new ReplayGuard(1000, 10);
    g.claim('a', 0, 0);
    g.claim('b', 500, 500);
    assert.equal(g.claim('c', 1200, 1200), 'fresh');
    assert.equal(g.size, 2, 'a is gone, b and c stay');
  });

  test('bounded: when full the oldest is dropped and nothing signed at or before it is accepted again', () => {
    const g = new ReplayGuard(1_000_000, 3);
    for (const [s, at] of [
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ] as const)
      assert.equal(g.claim(s, at, 10), 'fresh');
    assert.equal(g.claim('d', 4, 10), 'fresh');
    assert.equal(g.size, 3);
    assert.equal(g.claim('a', 1, 10), 'forgotten', 'the dropped signature cannot come back');
    assert.equal(g.claim('z', 1, 10), 'forgotten', 'nor anything as old');
    assert.equal(g.claim('b', 2, 10), 'replayed');
    assert.equal(g.claim('e', 5, 10), 'fresh');
    assert.equal(g.claim('y', 2, 10), 'forgotten', 'b was dropped for e: the floor rose to 2');
  });
});
