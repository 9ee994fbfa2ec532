import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { contextRevision } from './context.js';

test('a build context revision follows its contents: the Dockerfile, file names and bytes, not file times', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-context-'));
  try {
    const app = path.join(dir, 'app');
    writeFileSync(app, 'one');
    const dockerfile = ['FROM busybox', 'COPY app /app'];
    const first = contextRevision({ app }, dockerfile);
    assert.match(first, /^[0-9a-f]{16}$/);
    writeFileSync(app, 'one');
    assert.equal(contextRevision({ app }, dockerfile), first, 'rewritten with the same bytes');
    assert.notEqual(contextRevision({ app }, [...dockerfile, 'EXPOSE 80']), first, 'another Dockerfile');
    assert.notEqual(contextRevision({ other: app }, dockerfile), first, 'another name in the context');
    writeFileSync(app, 'two');
    assert.notEqual(contextRevision({ app }, dockerfile), first, 'other bytes');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
