/**
 * AgentClient against a fake guest on a unix socket: terminals, guest signals,
 * and frames a hostile guest could send.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, GUEST_SIGNAL_MIN_INTERVAL_MS, type PtyExit } from './client.js';
import { FrameDecoder, HEADER_LEN, MAX_BODY, Msg, Tag, encodeFrame, type Frame } from './protocol.js';

interface FakeGuest {
  client: AgentClient;
  /** Frames the client sent, in order. */
  frames: Frame[];
  /** Resolves with the next frame the client sends of `type`. */
  next(type: number): Promise<Frame>;
  send(...frames: Buffer[]): void;
  socket: net.Socket;
}

let dir: string;
let server: net.Server;
let guest: FakeGuest;

beforeEach(async () => {
  dir = mkdtempSync('/tmp/cella-agent-');
  const sock = path.join(dir, 'ctl.sock');
  server = net.createServer();
  server.listen(sock);
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = await AgentClient.connect(sock);
  const [socket] = await accepted;
  const frames: Frame[] = [];
  const waiters: { type: number; resolve: (f: Frame) => void }[] = [];
  const decoder = new FrameDecoder();
  socket.on('data', (chunk) => {
    for (const f of decoder.push(chunk)) {
      const frame = { ...f, body: Buffer.from(f.body) };
      frames.push(frame);
      const i = waiters.findIndex((w) => w.type === f.type);
      if (i >= 0) waiters.splice(i, 1)[0]?.resolve(frame);
    }
  });
  guest = {
    client,
    frames,
    socket,
    next: (type) => {
      const seen = frames.find((f) => f.type === type && !consumed.has(f));
      if (seen) {
        consumed.add(seen);
        return Promise.resolve(seen);
      }
      return new Promise((resolve) =>
        waiters.push({
          type,
          resolve: (f) => {
            consumed.add(f);
            resolve(f);
          },
        }),
      );
    },
    send: (...fs) => socket.write(Buffer.concat(fs)),
  };
  const consumed = new Set<Frame>();
});

afterEach(async () => {
  guest.client.close();
  guest.socket.destroy();
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A ping the fake guest answers: everything the client sent before it has arrived. */
async function roundTrip(): Promise<void> {
  const pinging = guest.client.ping(2000);
  guest.send(encodeFrame(Msg.PONG, (await guest.next(Msg.PING)).id));
  await pinging;
}

const status = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n, 0);
  return b;
};

test('openPty sends PTY_OPEN; output sent along with the OK is not lost; input, resize, close and exit', async () => {
  const opening = guest.client.openPty({ argv: ['/bin/sh'], rows: 24, cols: 80 });
  const open = await guest.next(Msg.PTY_OPEN);
  const winsize = open.body.subarray(open.body.length - 4);
  assert.equal(open.body.readUInt8(open.body.length - 9), Tag.WINSIZE);
  assert.deepEqual([winsize.readUInt16LE(0), winsize.readUInt16LE(2)], [24, 80]);
  // The prompt arrives in the same chunk as the OK, before the caller could listen.
  guest.send(encodeFrame(Msg.OK, open.id), encodeFrame(Msg.PTY_OUT, open.id, Buffer.from('$ '), 1));
  const pty = await opening;
  assert.equal(pty.id, open.id);
  const data: string[] = [];
  pty.on('data', (d: Buffer) => data.push(d.toString()));
  const events: string[] = [];
  pty.on('exit', () => events.push('exit'));
  pty.on('close', () => events.push('close'));

  pty.write('echo hi\r');
  pty.write(Buffer.alloc(70_000, 0x61));
  assert.equal((await guest.next(Msg.PTY_IN)).body.toString(), 'echo hi\r');
  const chunks = [await guest.next(Msg.PTY_IN), await guest.next(Msg.PTY_IN), await guest.next(Msg.PTY_IN)];
  assert.deepEqual(chunks.map((f) => f.body.length), [32768, 32768, 70_000 - 65536]);
  pty.resize(100, 30);
  const resize = await guest.next(Msg.PTY_RESIZE);
  assert.deepEqual([resize.id, resize.body.readUInt16LE(0), resize.body.readUInt16LE(2)], [open.id, 30, 100]);
  assert.throws(() => pty.resize(0, 30), RangeError);
  pty.close();
  pty.close();
  assert.equal((await guest.next(Msg.PTY_CLOSE)).id, open.id);

  const exited = once(pty, 'exit') as Promise<[PtyExit]>;
  guest.send(encodeFrame(Msg.PTY_OUT, open.id, Buffer.from('hi\r\n'), 1), encodeFrame(Msg.PTY_EXIT, open.id, status(1)));
  const [exit] = await exited;
  assert.deepEqual(exit, { status: 1, exitCode: null, signal: 1 });
  assert.deepEqual(pty.exitStatus, exit);
  await sleep(10);
  assert.deepEqual(data, ['$ ', 'hi\r\n']);
  assert.deepEqual(events, ['exit', 'close']);
  assert.ok(pty.closed);
  pty.write('ignored');
  await roundTrip();
  assert.equal(guest.frames.filter((f) => f.type === Msg.PTY_CLOSE).length, 1, 'close() sends PTY_CLOSE once');
  assert.ok(!guest.frames.some((f) => f.type === Msg.PTY_IN && f.body.toString() === 'ignored'));
});

test('an ERROR answer rejects openPty; a lost connection closes open sessions without an exit', async () => {
  const refused = guest.client.openPty({ rows: 24, cols: 80 });
  const open = await guest.next(Msg.PTY_OPEN);
  assert.equal(open.body.length, 9, 'no argv: only the size');
  guest.send(encodeFrame(Msg.ERROR, open.id, Buffer.from('too many terminals (8)')));
  await assert.rejects(refused, /too many terminals/);

  const opening = guest.client.openPty({ rows: 24, cols: 80 });
  guest.send(encodeFrame(Msg.OK, (await guest.next(Msg.PTY_OPEN)).id));
  const pty = await opening;
  const events: string[] = [];
  pty.on('exit', () => events.push('exit'));
  const closed = once(pty, 'close');
  guest.socket.destroy();
  await closed;
  assert.deepEqual(events, []);
  assert.equal(pty.exitStatus, undefined);
});

test('closeAllPtys sends PTY_CLOSE for id 0', async () => {
  guest.client.closeAllPtys();
  assert.equal((await guest.next(Msg.PTY_CLOSE)).id, 0);
});

test('activity and suspend requests become events, throttled on the host too', async () => {
  const seen: string[] = [];
  guest.client.on('activity', () => seen.push('activity'));
  guest.client.on('suspend-request', () => seen.push('suspend'));
  const flood = Array.from({ length: 50 }, () => encodeFrame(Msg.ACTIVITY, 0));
  guest.send(...flood, encodeFrame(Msg.SUSPEND_REQUEST, 0, Buffer.from('ignored body')), encodeFrame(Msg.SUSPEND_REQUEST, 0));
  await roundTrip();
  assert.deepEqual(seen, ['activity', 'suspend']);
  await sleep(GUEST_SIGNAL_MIN_INTERVAL_MS);
  guest.send(encodeFrame(Msg.ACTIVITY, 0));
  await sleep(50);
  assert.deepEqual(seen, ['activity', 'suspend', 'activity']);
});

test('malformed or unexpected frames from the guest are ignored without a crash', async () => {
  const exits: number[] = [];
  guest.client.on('app-exit', (s: number) => exits.push(s));
  const activity: unknown[] = [];
  guest.client.on('activity', (...args: unknown[]) => activity.push(args));
  const pinging = guest.client.ping(2000);
  const ping = await guest.next(Msg.PING);
  const execing = guest.client.exec({ argv: ['/bin/true'] });
  const exec = await guest.next(Msg.EXEC);
  guest.send(
    encodeFrame(Msg.APP_EXIT, 0), // no status
    encodeFrame(Msg.APP_EXIT, 0, Buffer.alloc(2)),
    encodeFrame(Msg.PTY_EXIT, 99, status(0)), // unknown session
    encodeFrame(Msg.PTY_OUT, 99, Buffer.from('x'), 1),
    encodeFrame(Msg.EXEC_OUT, 12345, Buffer.from('x'), 1),
    encodeFrame(200, ping.id), // unknown type naming a pending request: not an answer
    encodeFrame(Msg.EXEC_OUT, ping.id), // nor is output
    encodeFrame(Msg.OK, exec.id),
    encodeFrame(Msg.EXEC_EXIT, exec.id, Buffer.alloc(1)), // too short: ignored
  );
  await sleep(50);
  assert.deepEqual(exits, []);
  let settled = false;
  void pinging.then(() => (settled = true), () => (settled = true));
  await sleep(10);
  assert.equal(settled, false, 'the ping is still waiting for its PONG');
  guest.send(encodeFrame(Msg.PONG, ping.id), encodeFrame(Msg.EXEC_EXIT, exec.id, status(0)), encodeFrame(Msg.APP_EXIT, 0, status(256)));
  await pinging;
  assert.equal((await execing).exitCode, 0);
  await sleep(10);
  assert.deepEqual(exits, [256]);
  assert.deepEqual(activity, []);
});

test('a frame longer than any the guest may send drops the connection', async () => {
  const closed = once(guest.client, 'close');
  const head = Buffer.alloc(HEADER_LEN);
  head.writeUInt32LE(MAX_BODY + 1, 0);
  head.writeUInt8(Msg.PTY_OUT, 4);
  guest.send(head);
  await closed;
  await assert.rejects(guest.client.ping(), /closed/);
});
