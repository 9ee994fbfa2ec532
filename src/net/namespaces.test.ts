/**
 * Reclaim of namespaces a crashed cellad left (needs root and iproute2, as
 * the engine does, and cella-netd built here: gcc and libnftables-dev;
 * skipped otherwise).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../host/index.js';
import { reclaimNamespaces, useNetworkHelper } from './index.js';

const root = process.getuid?.() === 0;
const canBuild = existsSync('/usr/include/nftables/libnftables.h');
/** Its own build folder: netd.test.ts builds in another, and test files run in parallel. */
const BUILD = fileURLToPath(new URL('../../.cella-build/netd-reclaim', import.meta.url));

test(
  'regression (issue 11): a namespace cut short before its owner tag is reclaimed by its intent file; others are left alone',
  { skip: (!root && 'needs root') || (!canBuild && 'libnftables-dev is not installed (setup installs it)'), timeout: 60_000 },
  async () => {
    execFileSync(
      'make',
      ['-C', fileURLToPath(new URL('../../guest', import.meta.url)), '--no-print-directory', `OUT=${BUILD}`, path.join(BUILD, 'cella-netd')],
      { stdio: 'pipe' },
    );
    const release = useNetworkHelper(path.join(BUILD, 'cella-netd'));
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
      await release();
    }
  },
);
