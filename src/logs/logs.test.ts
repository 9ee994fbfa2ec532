import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LogHub, pruneDir } from './index.js';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'cella-logs-'));

test('a VM log is rotated past its bound: the newest output and the one older file are kept, a reader gets both in order', async () => {
  const dir = tmp();
  try {
    const hub = new LogHub(dir, 100);
    const src = new EventEmitter();
    hub.attach('vm1', src);
    for (let i = 0; i < 7; i++) src.emit('data', 'stdout', Buffer.from(`line ${i} ${'x'.repeat(30)}\n`));
    hub.end('vm1');
    const file = hub.file('vm1');
    assert.ok(readFileSync(file).length <= 100);
    assert.ok(existsSync(`${file}.1`));
    let all = '';
    await hub.stream('vm1', { follow: false, isLive: async () => false, signal: new AbortController().signal }, (c) => (all += c.toString()));
    const lines = all
      .trim()
      .split('\n')
      .map((l) => Number(l.split(' ')[1]));
    assert.deepEqual(
      lines,
      [...lines].sort((a, b) => a - b),
      'in order',
    );
    assert.equal(lines.at(-1), 6, 'the newest line is there');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pruneDir: files older than the limit go, then the oldest until the total fits; kept files stay whatever their age', () => {
  const dir = tmp();
  try {
    mkdirSync(dir, { recursive: true });
    const now = Date.now();
    const put = (name: string, bytes: number, ageMs: number): void => {
      writeFileSync(path.join(dir, name), Buffer.alloc(bytes));
      const t = new Date(now - ageMs);
      utimesSync(path.join(dir, name), t, t);
    };
    put('old.log', 10, 10_000);
    put('live.log', 10, 10_000);
    put('a.log', 40, 3000);
    put('b.log', 40, 2000);
    put('c.log', 40, 1000);
    const removed = pruneDir(dir, { maxAgeMs: 5000, maxTotalBytes: 100 }, (n) => n === 'live.log', now);
    assert.equal(removed, 2);
    assert.ok(!existsSync(path.join(dir, 'old.log')), 'too old');
    assert.ok(!existsSync(path.join(dir, 'a.log')), 'oldest beyond the bound');
    assert.ok(existsSync(path.join(dir, 'live.log')) && existsSync(path.join(dir, 'b.log')) && existsSync(path.join(dir, 'c.log')));
    assert.equal(pruneDir(path.join(dir, 'missing'), { maxAgeMs: 1, maxTotalBytes: 0 }), 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
