import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { DEFAULT_STANDBY_PRELOAD_MIB, defaultStandbyPreloadMiB, startServer } from './index.js';

test('a bad standby budget or minimum idle time is refused with INVALID_ARGUMENT before anything is made', { timeout: 10_000 }, async () => {
  const parent = mkdtempSync(path.join(tmpdir(), 'cella-options-'));
  const dataDir = path.join(parent, 'data');
  try {
    for (const bad of [{ standbyQemus: -1 }, { standbyQemus: 1.5 }, { standbyPreloadMiB: -4 }, { minIdleSeconds: 0 }, { minIdleSeconds: 2.5 }]) {
      await assert.rejects(
        startServer({ dataDir, port: 0, proxyPort: 0, log: () => {}, ...bad }),
        (err: unknown) =>
          isCellaError(err) &&
          err.code === 'INVALID_ARGUMENT' &&
          /--standby-(qemus|preload-mib) must be a non-negative integer|--min-idle-seconds must be a positive integer/.test(err.message),
      );
      assert.equal(existsSync(dataDir), false, 'no data directory was made');
    }
  } finally {
    rmSync(parent, { recursive: true, force: true });
  }
});

test('the default preload budget is at most a sixteenth of the host RAM', () => {
  assert.equal(defaultStandbyPreloadMiB(24 * 1024), DEFAULT_STANDBY_PRELOAD_MIB);
  assert.equal(defaultStandbyPreloadMiB(4096), 256);
  assert.equal(defaultStandbyPreloadMiB(1000), 62);
});
