import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CellaError, ERRORS, ERRORS_DOC_PATH, fromErrno, httpError, renderErrorsDoc } from './index.js';

test('a full disk, however it surfaces, is the contract InsufficientCapacityException, never an INTERNAL 500', () => {
  for (const code of ['ENOSPC', 'EDQUOT', 'SQLITE_FULL']) {
    const err = Object.assign(new Error('database or disk is full'), { code });
    const h = httpError(err);
    assert.equal(h.status, 500);
    assert.equal(h.headers['x-amzn-errortype'], 'InsufficientCapacityException');
    assert.equal((JSON.parse(h.body) as { code: string }).code, 'INSUFFICIENT_CAPACITY');
    assert.equal(h.headers['retry-after'], '30');
  }
  const other = Object.assign(new Error('boom'), { code: 'EIO' });
  assert.equal(fromErrno(other), other);
  const typed = new CellaError('NOT_FOUND', 'x');
  assert.equal(fromErrno(typed), typed);
  assert.equal((JSON.parse(httpError(other).body) as { code: string }).code, 'INTERNAL');
});

test('every error code has a one-line doc, and docs/errors.md lists each one as `npm run docs:errors` writes it', () => {
  const page = readFileSync(fileURLToPath(new URL(`../../${ERRORS_DOC_PATH}`, import.meta.url)), 'utf8');
  for (const [code, { doc }] of Object.entries(ERRORS)) {
    assert.match(doc, /^[^\n]{20,}$/, `${code}: doc must be one line saying what happened and what to do`);
    assert.ok(page.includes(`| \`${code}\` |`), `${code} is missing from ${ERRORS_DOC_PATH}: run npm run docs:errors`);
  }
  assert.equal(page, renderErrorsDoc(), `${ERRORS_DOC_PATH} is out of date: run npm run docs:errors`);
});
