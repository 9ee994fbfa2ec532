import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pruneLayers } from './cache.js';

test('pruneLayers removes the least recently used layers (and their markers) until the cache fits', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-cache-'));
  try {
    const now = Date.now();
    for (const [key, age] of [
      ['old', 3000],
      ['mid', 2000],
      ['new', 1000],
    ] as const) {
      writeFileSync(path.join(dir, `${key}.qcow2`), Buffer.alloc(64 * 1024, 1));
      writeFileSync(path.join(dir, `${key}.json`), '{}');
      const t = new Date(now - age);
      utimesSync(path.join(dir, `${key}.json`), t, t);
    }
    const r = pruneLayers(dir, 130 * 1024);
    assert.equal(r.removed, 1);
    assert.ok(!existsSync(path.join(dir, 'old.qcow2')) && !existsSync(path.join(dir, 'old.json')));
    assert.ok(existsSync(path.join(dir, 'mid.qcow2')) && existsSync(path.join(dir, 'new.qcow2')));
    assert.equal(pruneLayers(dir, 0).removed, 2);
    assert.deepEqual(pruneLayers(path.join(dir, 'missing'), 0), { removed: 0, freedBytes: 0, keptBytes: 0 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
