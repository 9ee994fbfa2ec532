import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { QmpClient, QmpLineParser } from './qmp.js';

test('line parser joins messages split across chunks', () => {
  const p = new QmpLineParser();
  assert.deepEqual(p.push('{"a":'), []);
  assert.deepEqual(p.push('1}\n{"b":2}\n{"c"'), [{ a: 1 }, { b: 2 }]);
  assert.deepEqual(p.push(':3}\n'), [{ c: 3 }]);
});

/** A fake QMP server on a unix socket: greets, then answers by the given handler. */
function fakeQmp(handler: (cmd: { execute: string; id: number; arguments?: unknown }, sock: net.Socket) => void) {
  const dir = mkdtempSync(path.join(tmpdir(), 'qmp-test-'));
  const sockPath = path.join(dir, 'qmp.sock');
  const server = net.createServer((sock) => {
    sock.write('{"QMP": {"version": {}, "capabilities": []}}\n');
    const parser = new QmpLineParser();
    sock.on('data', (d) => {
      for (const m of parser.push(d.toString())) handler(m as { execute: string; id: number }, sock);
    });
  });
  return {
    sockPath,
    listen: () => new Promise<void>((r) => server.listen(sockPath, r)),
    close: () => {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('client negotiates, matches replies by id, surfaces errors with a code, and delivers events', async () => {
  const seen: string[] = [];
  const srv = fakeQmp((cmd, sock) => {
    seen.push(cmd.execute);
    if (cmd.execute === 'qmp_capabilities') sock.write(`{"return": {}, "id": ${cmd.id}}\n`);
    else if (cmd.execute === 'query-status') {
      sock.write('{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\n');
      sock.write(`{"return": {"status": "paused"}, "id": ${cmd.id}}\n`);
    } else sock.write(`{"error": {"class": "GenericError", "desc": "nope"}, "id": ${cmd.id}}\n`);
  });
  await srv.listen();
  try {
    const client = await QmpClient.connect(srv.sockPath, 2000);
    const stop = client.waitEvent('STOP', () => true, 2000);
    assert.deepEqual(await client.execute('query-status'), { status: 'paused' });
    await stop;
    await assert.rejects(client.execute('bogus'), (err) => isCellaError(err, 'QMP_ERROR') && err.details.qmpClass === 'GenericError');
    assert.deepEqual(seen, ['qmp_capabilities', 'query-status', 'bogus']);
    client.close();
  } finally {
    srv.close();
  }
});

test('a command in flight when QEMU goes away fails with QEMU_EXITED', async () => {
  const srv = fakeQmp((cmd, sock) => {
    if (cmd.execute === 'qmp_capabilities') sock.write(`{"return": {}, "id": ${cmd.id}}\n`);
    else sock.destroy();
  });
  await srv.listen();
  try {
    const client = await QmpClient.connect(srv.sockPath, 2000);
    await assert.rejects(client.execute('stop'), (err) => isCellaError(err, 'QEMU_EXITED'));
  } finally {
    srv.close();
  }
});

test('connect gives up with QMP_ERROR when nothing listens', async () => {
  await assert.rejects(QmpClient.connect('/nonexistent/qmp.sock', 50), (err) => isCellaError(err, 'QMP_ERROR'));
});
