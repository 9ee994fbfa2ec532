/**
 * Reclaim of namespaces a crashed cellad left (needs root and iproute2, as
 * the engine does; skipped otherwise).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { run } from '../host/index.js';
import { reclaimNamespaces } from './index.js';

const root = process.getuid?.() === 0;

test(
  'regression (issue 11): a namespace cut short before its owner tag is reclaimed by its intent file; others are left alone',
  { skip: !root && 'needs root', timeout: 30_000 },
  async () => {
    const intentDir = mkdtempSync(path.join(tmpdir(), 'cella-netns-'));
    // High slots, far from what engines hand out first.
    const mine = 16_300 + (process.pid % 40);
    const theirs = mine + 40;
    try {
      writeFileSync(path.join(intentDir, String(mine)), 'cella-owner:test');
      await run('ip', ['netns', 'add', `cella-${mine}`]);
      await run('ip', ['netns', 'add', `cella-${theirs}`]);
      // An intent whose namespace never came to be.
      writeFileSync(path.join(intentDir, String(mine + 1)), 'cella-owner:test');
      const removed = await reclaimNamespaces({ tag: 'cella-owner:test', intentDir }, new Set());
      assert.equal(removed, 1);
      assert.ok(!existsSync(`/run/netns/cella-${mine}`), 'the untagged namespace of this owner went');
      assert.ok(existsSync(`/run/netns/cella-${theirs}`), 'an untagged namespace with no intent of ours stays');
      assert.ok(!existsSync(path.join(intentDir, String(mine))) && !existsSync(path.join(intentDir, String(mine + 1))), 'intents are cleared');
    } finally {
      for (const slot of [mine, theirs]) await run('ip', ['netns', 'del', `cella-${slot}`]).catch(() => {});
      rmSync(intentDir, { recursive: true, force: true });
    }
  },
);
