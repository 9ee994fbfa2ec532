import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isCellaError, SETUP_COMMAND } from '../contract/index.js';
import { guestPaths, loadGuestArtifacts } from './artifacts.js';

test('a guest dir without cella-netd (from before ADR 0013) is refused with the setup command; with it, it loads', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cella-guest-'));
  try {
    const paths = guestPaths(dir);
    for (const file of [paths.kernel, paths.initrd, paths.demoApp, paths.spawner]) writeFileSync(file, '');
    const manifest = { format: 1, kernelVersion: '', kernelPackage: '', vmlinuxSha256: '', initrdSha256: '', agentSha256: '', modules: [], createdAt: '' };
    writeFileSync(paths.manifest, JSON.stringify(manifest));
    assert.throws(
      () => loadGuestArtifacts(dir),
      (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes('cella-netd') && e.message.includes(SETUP_COMMAND),
    );
    writeFileSync(paths.netd, '');
    assert.equal(loadGuestArtifacts(dir).netd, join(dir, 'cella-netd'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
