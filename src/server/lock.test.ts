import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { processStartTime } from '../vmm/index.js';
import { lockDataDir } from './index.js';

const dir = (): string => mkdtempSync(path.join(tmpdir(), 'cella-lock-'));

test('the lock names its holder by pid and start time; a second holder is refused; unlock frees it', () => {
  const d = dir();
  try {
    const unlock = lockDataDir(d);
    assert.equal(readFileSync(path.join(d, 'cellad.pid'), 'utf8'), `${process.pid} ${processStartTime(process.pid)}`);
    assert.throws(() => writeFileSync(path.join(d, 'cellad.pid'), 'x', { flag: 'wx' }));
    unlock();
    lockDataDir(d)();
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('a live holder keeps the lock: INVALID_STATE', { timeout: 10_000 }, async () => {
  const d = dir();
  const child = spawn('sleep', ['30']);
  try {
    await new Promise((r) => child.once('spawn', r));
    writeFileSync(path.join(d, 'cellad.pid'), `${child.pid} ${processStartTime(child.pid as number)}`);
    assert.throws(
      () => lockDataDir(d),
      (e) => isCellaError(e, 'INVALID_STATE'),
    );
  } finally {
    child.kill();
    rmSync(d, { recursive: true, force: true });
  }
});

test('regression (issue 11): a zombie predecessor, not yet reaped, does not block a restart', { timeout: 10_000 }, async () => {
  const d = dir();
  // `sleep 0` exits and stays a zombie: its parent execs into a sleep that never reaps it.
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const zombie = Number(await new Promise<string>((r) => parent.stdout.once('data', (c: Buffer) => r(c.toString()))));
    for (let i = 0; i < 100 && !/^State:\s+Z/m.test(readFileSync(`/proc/${zombie}/status`, 'utf8')); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(readFileSync(`/proc/${zombie}/status`, 'utf8'), /^State:\s+Z/m, 'the predecessor is a zombie');
    writeFileSync(path.join(d, 'cellad.pid'), String(zombie));
    lockDataDir(d)();
  } finally {
    parent.kill();
    rmSync(d, { recursive: true, force: true });
  }
});

test('a reused pid (another start time) does not hold the lock', () => {
  const d = dir();
  try {
    writeFileSync(path.join(d, 'cellad.pid'), `${process.pid} 1`);
    lockDataDir(d)();
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
