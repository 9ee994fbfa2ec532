/**
 * AgentClient against a fake guest on a unix socket: terminals, guest signals,
 * processes, files, watches and the other protocol-3 requests, version
 * fallback, and frames a hostile guest could send.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from './client.js';
import { GUEST_SIGNAL_MIN_INTERVAL_MS } from './connection.js';
import type { PtyExit } from './process.js';
import { FrameDecoder, FsOp, HEADER_LEN, MAX_BODY, Msg, STDIN_WINDOW, Tag, decodeRecords, encodeFrame, tlv, u32, type Frame } from './protocol.js';
import { READ_WINDOW } from './files.js';
import type { ExecProcess } from './process.js';
import { isCellaError } from '../contract/index.js';

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
  const hello = once(client, 'hello');
  guest.send(encodeFrame(Msg.HELLO, 0, u32(3)));
  await hello;
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

test('a ping the guest dropped is sent again, and the answer to either one is enough', async () => {
  const pinging = guest.client.ping(5000, 20);
  const first = await guest.next(Msg.PING); // dropped, as a guest closing its port does
  const second = await guest.next(Msg.PING);
  assert.notEqual(second.id, first.id);
  guest.send(encodeFrame(Msg.PONG, second.id, u32(3)));
  await pinging;
  // A late answer to the first one is ignored, and nothing is left waiting.
  guest.send(encodeFrame(Msg.PONG, first.id, u32(3)));
  await roundTrip();
});

test('a guest that never answers makes ping fail at its deadline, not before', async () => {
  const started = performance.now();
  await assert.rejects(guest.client.ping(300, 20), (err) => isCellaError(err) && err.code === 'AGENT_TIMEOUT');
  assert.ok(performance.now() - started >= 290);
  assert.ok(guest.frames.filter((f) => f.type === Msg.PING).length >= 2, 'the ping was sent again');
});

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
  assert.deepEqual(
    chunks.map((f) => f.body.length),
    [32768, 32768, 70_000 - 65536],
  );
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
  void pinging.then(
    () => (settled = true),
    () => (settled = true),
  );
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

// ---------- protocol 3 ----------

const ENOENT = 2;
const EPIPE = 32;
const ENOSPC = 28;
const EEXIST = 17;

/** An ERROR frame with an errno, as a protocol-3 guest sends it. */
const errorFrame = (id: number, errno: number, text: string): Buffer => encodeFrame(Msg.ERROR, id, Buffer.from(text), errno);

const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
};

/** An entry as fs_entry() writes it. */
function entry(fields: { path?: string; mode?: number; size?: number; target?: string; targetMode?: number; xattrs?: [string, string][] } = {}): Buffer {
  const mtime = Buffer.alloc(12);
  mtime.writeBigInt64LE(1_700_000_000n, 0);
  mtime.writeUInt32LE(5_000_000, 8);
  return Buffer.concat([
    ...(fields.path !== undefined ? [tlv(Tag.PATH, Buffer.from(fields.path))] : []),
    tlv(Tag.MODE, u32(fields.mode ?? 0o100644)),
    tlv(Tag.SIZE, u64(fields.size ?? 3)),
    tlv(Tag.MTIME, mtime),
    tlv(Tag.UID, u32(1000)),
    tlv(Tag.GID, u32(1000)),
    tlv(Tag.OWNER, Buffer.from('user')),
    tlv(Tag.GROUP, Buffer.from('user')),
    ...(fields.target !== undefined ? [tlv(Tag.TARGET, Buffer.from(fields.target))] : []),
    ...(fields.targetMode !== undefined ? [tlv(Tag.TARGET_MODE, u32(fields.targetMode))] : []),
    ...(fields.xattrs ?? []).map(([k, v]) => tlv(Tag.XATTR, Buffer.concat([Buffer.from(k), Buffer.alloc(1), Buffer.from(v)]))),
  ]);
}

/** The records of a request body as [tag, text]. */
const fields = (body: Buffer): [number, string][] => (decodeRecords(body) ?? []).map(([t, v]) => [t, v.toString()]);

function ackFrame(id: number, bytes: number, errno = 0): Buffer {
  return encodeFrame(Msg.EXEC_IN_ACK, id, Buffer.concat([u32(bytes), u32(errno)]));
}

/** Starts a process through the fake guest (which answers its EXEC with pid 4242). */
async function spawned(stdin: 'pipe' | 'none' = 'pipe', label: string | null = 'cat-1'): Promise<{ p: ExecProcess; id: number }> {
  const spawning = guest.client.spawn({ argv: ['/bin/cat'], ...(label === null ? {} : { label }) }, { stdin });
  const exec = await guest.next(Msg.EXEC);
  guest.send(encodeFrame(Msg.OK, exec.id, u32(4242)));
  return { p: await spawning, id: exec.id };
}

test('a new connection first tells the guest it is a new host (SESSION, id 0)', async () => {
  await roundTrip();
  assert.deepEqual([guest.frames[0]?.type, guest.frames[0]?.id], [Msg.SESSION, 0]);
});

test('a protocol-2 guest: protocol-3 calls fail with AGENT_UNSUPPORTED before anything is sent; protocol-2 calls work', async () => {
  guest.send(encodeFrame(Msg.HELLO, 0, u32(2)));
  await once(guest.client, 'hello');
  for (const call of [
    () => guest.client.fs.stat('/etc'),
    () => guest.client.listProcesses(),
    () => guest.client.spawn({ argv: ['/bin/cat'] }, { stdin: 'pipe' }),
    () => guest.client.stats(),
    () => guest.client.lookupUser('user'),
    () => guest.client.setEnv({ A: '1' }),
  ]) {
    await assert.rejects(call(), (e: unknown) => isCellaError(e, 'AGENT_UNSUPPORTED') && e.details.guestProtocol === 2);
  }
  // A plain command needs nothing new: its OK simply has no pid.
  const { p } = await spawned('none', null);
  assert.equal(p.pid, 4242);
  await roundTrip();
  const v3 = [Msg.FS_STAT, Msg.EXEC_LIST, Msg.STATS, Msg.USER_LOOKUP, Msg.SET_ENV];
  assert.ok(!guest.frames.some((f) => v3.includes(f.type as never)), 'nothing of protocol 3 was sent');
});

test('without a HELLO the version is asked with a ping: an empty PONG is protocol 2, and "unknown message" is AGENT_UNSUPPORTED too', async () => {
  (guest.client as unknown as { version: number | undefined }).version = undefined;
  const stat = guest.client.fs.stat('/x');
  guest.send(encodeFrame(Msg.PONG, (await guest.next(Msg.PING)).id));
  await assert.rejects(stat, (e: unknown) => isCellaError(e, 'AGENT_UNSUPPORTED'));
  // A guest that claims 3 but answers like a 2.
  (guest.client as unknown as { version: number | undefined }).version = undefined;
  const again = guest.client.fs.stat('/x');
  guest.send(encodeFrame(Msg.PONG, (await guest.next(Msg.PING)).id, u32(3)));
  const f = await guest.next(Msg.FS_STAT);
  guest.send(encodeFrame(Msg.ERROR, f.id, Buffer.from(`unknown message ${Msg.FS_STAT}`)));
  await assert.rejects(again, (e: unknown) => isCellaError(e, 'AGENT_UNSUPPORTED'));
  assert.equal(await guest.client.protocolVersion(), 3);
});

test('guest errors carry the errno and a code from it; protocol-2 calls keep AGENT_ERROR', async () => {
  const cases: [number, string][] = [
    [ENOENT, 'NOT_FOUND'],
    [EEXIST, 'ALREADY_EXISTS'],
    [13, 'ACCESS_DENIED'],
    [ENOSPC, 'GUEST_DISK_FULL'],
    [20, 'INVALID_ARGUMENT'],
    [21, 'INVALID_ARGUMENT'],
    [11, 'QUOTA_EXCEEDED'],
    [5, 'AGENT_ERROR'],
  ];
  for (const [errno, code] of cases) {
    const mk = guest.client.fs.mkdir('/a');
    guest.send(errorFrame((await guest.next(Msg.FS_MKDIR)).id, errno, 'nope'));
    await assert.rejects(mk, (e: unknown) => isCellaError(e) && e.code === code && typeof e.details.errno === 'string');
  }
  const exec = guest.client.exec({ argv: ['/nope'] });
  guest.send(errorFrame((await guest.next(Msg.EXEC)).id, 11, 'too many processes (256)'));
  await assert.rejects(exec, (e: unknown) => isCellaError(e, 'AGENT_ERROR') && e.details.errno === 'EAGAIN' && /too many processes/.test(e.message));
});

test('spawn with stdin pipe: pid, writes paced by the guest window and resolved by its acks, closeStdin after the last byte', async () => {
  const { p, id } = await spawned();
  assert.equal(p.pid, 4242);
  const spec = fields((guest.frames.find((f) => f.type === Msg.EXEC) as Frame).body);
  assert.deepEqual(spec, [
    [Tag.ARG, '/bin/cat'],
    [Tag.LABEL, 'cat-1'],
    [Tag.STDIN_PIPE, ''],
  ]);

  const big = Buffer.alloc(STDIN_WINDOW + 100_000, 7);
  let wrote = false;
  const writing = p.write(big).then(() => (wrote = true));
  const closing = p.closeStdin();
  await roundTrip();
  const sent = (): number => guest.frames.filter((f) => f.type === Msg.EXEC_IN).reduce((n, f) => n + f.body.length, 0);
  assert.equal(sent(), STDIN_WINDOW, 'no more than the window before an ack');
  assert.ok(!guest.frames.some((f) => f.type === Msg.EXEC_CLOSE_IN), 'stdin is closed only after everything was sent');
  guest.send(ackFrame(id, STDIN_WINDOW));
  await roundTrip();
  assert.equal(sent(), big.length);
  assert.equal(wrote, false, 'resolved only when the guest wrote all of it');
  const close = await guest.next(Msg.EXEC_CLOSE_IN);
  assert.equal(close.id, id);
  guest.send(ackFrame(id, big.length - STDIN_WINDOW), encodeFrame(Msg.OK, id));
  await writing;
  await closing;
  await assert.rejects(p.write('late'), (e: unknown) => isCellaError(e, 'INVALID_STATE'));

  // Output and exit, in order, then close.
  const events: string[] = [];
  p.on('stdout', (d: Buffer) => events.push(`out:${d.toString()}`));
  p.on('stderr', (d: Buffer) => events.push(`err:${d.toString()}`));
  p.on('exit', (e: { exitCode: number }) => events.push(`exit:${e.exitCode}`));
  const closed = once(p, 'close');
  guest.send(
    encodeFrame(Msg.EXEC_OUT, id, Buffer.from('a'), 1),
    encodeFrame(Msg.EXEC_OUT, id, Buffer.from('b'), 2),
    encodeFrame(Msg.EXEC_EXIT, id, status(3 << 8)),
  );
  await closed;
  assert.deepEqual(events, ['out:a', 'err:b', 'exit:3']);
});

test('stdin: an EPIPE ack rejects what is pending and what follows; a lying ack gives stdin up', async () => {
  const { p, id } = await spawned();
  const w1 = p.write('one');
  const w2 = p.write('two');
  await guest.next(Msg.EXEC_IN);
  guest.send(ackFrame(id, 6, EPIPE));
  await assert.rejects(w1, (e: unknown) => isCellaError(e) && e.details.errno === 'EPIPE');
  await assert.rejects(w2, (e: unknown) => isCellaError(e) && e.details.errno === 'EPIPE');
  await assert.rejects(p.write('three'), (e: unknown) => isCellaError(e) && e.details.errno === 'EPIPE');

  // Once the process ended, writes fail at once: no guest answer is waited for.
  const ended = await spawned();
  ended.p.on('exit', () => {});
  guest.send(encodeFrame(Msg.EXEC_EXIT, ended.id, status(0)));
  await once(ended.p, 'close');
  await assert.rejects(ended.p.write('x'), (e: unknown) => isCellaError(e) && e.details.errno === 'EPIPE');

  const q = await spawned();
  const w = q.p.write('abc');
  await guest.next(Msg.EXEC_IN);
  guest.send(ackFrame(q.id, 1_000_000)); // more than was ever sent
  await assert.rejects(w, (e: unknown) => isCellaError(e) && e.details.errno === 'EPIPE');
});

test('signal goes to the process id; requests on one id are sent one at a time', async () => {
  const { p, id } = await spawned('none');
  const a = p.signal(15);
  const b = p.kill();
  const first = await guest.next(Msg.SIGNAL);
  await roundTrip();
  assert.equal(guest.frames.filter((f) => f.type === Msg.SIGNAL).length, 1, 'the second waits for the first answer');
  guest.send(encodeFrame(Msg.OK, first.id));
  const second = await guest.next(Msg.SIGNAL);
  guest.send(errorFrame(second.id, 3, 'no such process'));
  await a;
  await assert.rejects(b, (e: unknown) => isCellaError(e, 'NOT_FOUND'));
  assert.deepEqual([first.id, first.body.readUInt32LE(0), second.body.readUInt32LE(0)], [id, 15, 9]);
  await assert.rejects(p.signal(0), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'));
});

test('listProcesses collects PROC_INFO until OK; attach makes a handle that gets output and an exit already known', async () => {
  const listing = guest.client.listProcesses();
  const req = await guest.next(Msg.EXEC_LIST);
  const info = (id: number, kind: number, extra: Buffer[] = []): Buffer =>
    encodeFrame(Msg.PROC_INFO, req.id, Buffer.concat([tlv(Tag.ID, u32(id)), tlv(Tag.PID, u32(id + 1000)), tlv(Tag.KIND, Buffer.from([kind])), ...extra]));
  guest.send(
    info(7, 1, [
      tlv(Tag.ARG, Buffer.from('/bin/sh')),
      tlv(Tag.ARG, Buffer.from('-c')),
      tlv(Tag.ENV, Buffer.from('A=b=c')),
      tlv(Tag.CWD, Buffer.from('/tmp')),
      tlv(Tag.LABEL, Buffer.from('t')),
    ]),
    info(8, 2, [tlv(Tag.STATUS, status(9)), tlv(Tag.TRUNCATED)]),
    encodeFrame(Msg.OK, req.id),
  );
  const list = await listing;
  assert.deepEqual(list, [
    { id: 7, pid: 1007, kind: 'exec', argv: ['/bin/sh', '-c'], env: { A: 'b=c' }, cwd: '/tmp', label: 't', truncated: false },
    { id: 8, pid: 1008, kind: 'pty', argv: [], env: {}, truncated: true, status: 9 },
  ]);

  const attaching = guest.client.attach(list[1] as never);
  const att = await guest.next(Msg.ATTACH);
  assert.equal(att.id, 8);
  guest.send(encodeFrame(Msg.OK, 8), encodeFrame(Msg.PTY_EXIT, 8, status(9)));
  const pty = await attaching;
  assert.equal(pty.pid, 1008);
  const [exit] = (await once(pty, 'exit')) as [PtyExit];
  assert.equal(exit.signal, 9);

  const bad = guest.client.listProcesses();
  const r2 = await guest.next(Msg.EXEC_LIST);
  guest.send(encodeFrame(Msg.PROC_INFO, r2.id, Buffer.from([Tag.ID, 9, 0, 0, 0])));
  await assert.rejects(bad, (e: unknown) => isCellaError(e, 'AGENT_ERROR'));
  const missing = guest.client.attach({ id: 99, pid: 1, kind: 'exec' });
  guest.send(errorFrame((await guest.next(Msg.ATTACH)).id, ENOENT, 'no such process'));
  await assert.rejects(missing, (e: unknown) => isCellaError(e, 'NOT_FOUND'));
});

test('fs.stat and fs.list decode entries; a listing too long is stopped in the guest', async () => {
  const stat = guest.client.fs.stat('/home/user/link');
  const sreq = await guest.next(Msg.FS_STAT);
  assert.deepEqual(fields(sreq.body), [[Tag.PATH, '/home/user/link']]);
  guest.send(
    encodeFrame(
      Msg.OK,
      sreq.id,
      entry({
        mode: 0o120777,
        size: 9,
        target: '/etc/hosts',
        targetMode: 0o100644,
        xattrs: [
          ['user.e2b.k', 'v'],
          ['user.other', 'x'],
        ],
      }),
    ),
  );
  assert.deepEqual(await stat, {
    type: 'symlink',
    mode: 0o120777,
    size: 9,
    mtimeMs: 1_700_000_000_005,
    uid: 1000,
    gid: 1000,
    owner: 'user',
    group: 'user',
    symlinkTarget: '/etc/hosts',
    targetMode: 0o100644,
    targetType: 'file',
    metadata: { k: 'v' },
  });

  const listing = guest.client.fs.list('/d', { depth: 2 });
  const lreq = await guest.next(Msg.FS_LIST);
  assert.deepEqual(
    fields(lreq.body).map(([t]) => t),
    [Tag.PATH, Tag.DEPTH],
  );
  guest.send(
    encodeFrame(Msg.FS_ENTRY, lreq.id, entry({ path: '/d/a', mode: 0o40755 })),
    encodeFrame(Msg.FS_ENTRY, lreq.id, entry({ path: '/d/a/b' })),
    encodeFrame(Msg.OK, lreq.id),
  );
  assert.deepEqual(
    (await listing).map((e) => [e.path, e.type]),
    [
      ['/d/a', 'directory'],
      ['/d/a/b', 'file'],
    ],
  );

  const long = guest.client.fs.list('/big', { maxEntries: 2 });
  const big = await guest.next(Msg.FS_LIST);
  guest.send(...[1, 2, 3, 4].map((i) => encodeFrame(Msg.FS_ENTRY, big.id, entry({ path: `/big/${i}` }))));
  await assert.rejects(long, (e: unknown) => isCellaError(e, 'PAYLOAD_TOO_LARGE'));
  assert.equal((await guest.next(Msg.FS_CLOSE)).id, big.id);

  const odd = guest.client.fs.stat('/x');
  guest.send(encodeFrame(Msg.OK, (await guest.next(Msg.FS_STAT)).id, Buffer.from([Tag.MODE, 4, 0, 0, 0, 1, 2])));
  await assert.rejects(odd, (e: unknown) => isCellaError(e, 'AGENT_ERROR'));
  const gone = guest.client.fs.exists('/gone');
  guest.send(errorFrame((await guest.next(Msg.FS_STAT)).id, ENOENT, 'missing'));
  assert.equal(await gone, false);
  await assert.rejects(guest.client.fs.stat('a\0b'), RangeError);
});

test('fs.read grants credit as the consumer reads; data beyond it or an errno ends the stream with an error', async () => {
  const reading = guest.client.fs.read('/f');
  const req = await guest.next(Msg.FS_READ);
  assert.deepEqual(
    fields(req.body).map(([t]) => t),
    [Tag.PATH, Tag.CREDIT],
  );
  assert.equal((decodeRecords(req.body)?.[1]?.[1] as Buffer).readUInt32LE(0), READ_WINDOW);
  const chunk = Buffer.alloc(16384, 1);
  // The fake guest sends exactly what it was granted, as cella-init does.
  const size = 3 * READ_WINDOW + 5000;
  let sent = 0;
  let allowed = READ_WINDOW;
  const sendUpTo = (): void => {
    const frames: Buffer[] = [];
    for (; sent < Math.min(allowed, size); sent += chunk.length)
      frames.push(encodeFrame(Msg.FS_DATA, req.id, chunk.subarray(0, Math.min(chunk.length, Math.min(allowed, size) - sent))));
    sent = Math.min(sent, size, allowed);
    guest.send(...frames);
  };
  guest.send(encodeFrame(Msg.OK, req.id, tlv(Tag.SIZE, u64(size))));
  sendUpTo();
  const { size: got, stream } = await reading;
  assert.equal(got, size);
  let total = 0;
  stream.on('data', (d: Buffer) => (total += d.length));
  // `sent` moves in sendUpTo: the loop ends when the guest has sent everything.
  for (;;) {
    if (sent >= size) break;
    const credit = await guest.next(Msg.FS_CREDIT);
    assert.equal(credit.id, req.id);
    const more = credit.body.readUInt32LE(0);
    assert.ok(more > 0 && allowed + more - total <= 2 * READ_WINDOW, 'never more than a window ahead of the consumer');
    allowed += more;
    sendUpTo();
  }
  guest.send(encodeFrame(Msg.FS_END, req.id, u32(0)));
  await once(stream, 'end');
  assert.equal(total, size);

  const greedy = guest.client.fs.read('/g');
  const g = await guest.next(Msg.FS_READ);
  guest.send(encodeFrame(Msg.OK, g.id, tlv(Tag.SIZE, u64(1))));
  const s2 = (await greedy).stream;
  s2.pause();
  const failed = once(s2, 'error');
  // A paused consumer holds a window in its buffer and grants one more: anything beyond is the guest's doing.
  guest.send(...Array.from({ length: (2 * READ_WINDOW) / chunk.length + 1 }, () => encodeFrame(Msg.FS_DATA, g.id, chunk)));
  const [err] = (await failed) as [Error];
  assert.match(err.message, /more data than the host asked for/);
  assert.equal((await guest.next(Msg.FS_CLOSE)).id, g.id, 'the guest is told to stop');

  // An error before the caller has the stream is the read's own; after, the stream's.
  const failing = guest.client.fs.read('/h');
  const h = await guest.next(Msg.FS_READ);
  guest.send(encodeFrame(Msg.OK, h.id, tlv(Tag.SIZE, u64(1))), encodeFrame(Msg.FS_END, h.id, u32(5)));
  await assert.rejects(failing, (e: unknown) => isCellaError(e) && e.details.errno === 'EIO');
  const later = guest.client.fs.read('/i');
  const i = await guest.next(Msg.FS_READ);
  guest.send(encodeFrame(Msg.OK, i.id, tlv(Tag.SIZE, u64(1))));
  const s4 = (await later).stream;
  const erred = once(s4, 'error');
  guest.send(encodeFrame(Msg.FS_END, i.id, u32(5)));
  const [e4] = (await erred) as [Error];
  assert.ok(isCellaError(e4) && e4.details.errno === 'EIO');
});

test('fs.write sends the data after the open and answers with the entry; ENOSPC from the guest stops it as GUEST_DISK_FULL', async () => {
  const data = Buffer.alloc(600_000, 3);
  const writing = guest.client.fs.write('/w', data, { uid: 1000, gid: 1000, mode: 0o600, metadata: { k: 'v' } });
  const open = await guest.next(Msg.FS_WRITE_OPEN);
  assert.deepEqual(fields(open.body), [
    [Tag.PATH, '/w'],
    [Tag.UID, fields(Buffer.concat([tlv(Tag.UID, u32(1000))]))[0]?.[1] as string],
    [Tag.GID, fields(Buffer.concat([tlv(Tag.GID, u32(1000))]))[0]?.[1] as string],
    [Tag.MODE, fields(Buffer.concat([tlv(Tag.MODE, u32(0o600))]))[0]?.[1] as string],
    [Tag.XATTR, 'user.e2b.k\0v'],
  ]);
  guest.send(encodeFrame(Msg.OK, open.id));
  const close = await guest.next(Msg.FS_WRITE_CLOSE);
  const got = Buffer.concat(guest.frames.filter((f) => f.type === Msg.FS_WRITE_DATA && f.id === open.id).map((f) => f.body));
  assert.ok(got.equals(data));
  guest.send(encodeFrame(Msg.OK, close.id, entry({ size: data.length })));
  assert.equal((await writing).size, data.length);

  async function* slow(): AsyncGenerator<Buffer> {
    yield Buffer.alloc(1000);
    await sleep(50);
    yield Buffer.alloc(1000);
  }
  const full = guest.client.fs.write('/full', slow());
  const o2 = await guest.next(Msg.FS_WRITE_OPEN);
  guest.send(encodeFrame(Msg.OK, o2.id));
  await guest.next(Msg.FS_WRITE_DATA);
  guest.send(encodeFrame(Msg.FS_END, o2.id, u32(ENOSPC)));
  await assert.rejects(full, (e: unknown) => isCellaError(e, 'GUEST_DISK_FULL') && e.httpStatus === 507 && e.details.errno === 'ENOSPC');
  assert.equal((await guest.next(Msg.FS_CLOSE)).id, o2.id);
  assert.ok(!guest.frames.some((f) => f.type === Msg.FS_WRITE_CLOSE && f.id === o2.id));
});

test('watch: events as fsnotify names them, a bounded queue for a lagging reader, the end, and close', async () => {
  const watching = guest.client.fs.watch('/d', { recursive: true });
  const req = await guest.next(Msg.FS_WATCH);
  assert.deepEqual(fields(req.body), [
    [Tag.PATH, '/d'],
    [Tag.RECURSIVE, ''],
  ]);
  guest.send(encodeFrame(Msg.OK, req.id));
  const w = await watching;
  const seen: unknown[] = [];
  w.on('event', (e) => seen.push(e));
  guest.send(
    encodeFrame(Msg.FS_EVENT, req.id, Buffer.from('sub/new'), FsOp.CREATE),
    encodeFrame(Msg.FS_EVENT, req.id, Buffer.from('f'), FsOp.WRITE),
    encodeFrame(Msg.FS_EVENT, req.id, Buffer.from('x'), 99), // unknown: ignored
    encodeFrame(Msg.FS_EVENT, req.id, Buffer.alloc(0), FsOp.OVERFLOW),
  );
  await roundTrip();
  assert.deepEqual(seen, [
    { op: 'create', name: 'sub/new' },
    { op: 'write', name: 'f' },
    { op: 'overflow', name: '' },
  ]);
  const it = w[Symbol.asyncIterator]();
  assert.deepEqual((await it.next()).value, { op: 'create', name: 'sub/new' });
  const closing = w.close();
  guest.send(encodeFrame(Msg.OK, (await guest.next(Msg.FS_UNWATCH)).id));
  await closing;
  assert.ok(w.closed);

  const missing = guest.client.fs.watch('/nope');
  guest.send(errorFrame((await guest.next(Msg.FS_WATCH)).id, ENOENT, 'missing'));
  await assert.rejects(missing, (e: unknown) => isCellaError(e, 'NOT_FOUND'));
});

test('lookupUser, stats, setEnv and the envs listener: what is sent and how answers are read', async () => {
  const looking = guest.client.lookupUser('user');
  const l = await guest.next(Msg.USER_LOOKUP);
  assert.deepEqual(fields(l.body), [[Tag.NAME, 'user']]);
  guest.send(
    encodeFrame(
      Msg.OK,
      l.id,
      Buffer.concat([
        tlv(Tag.NAME, Buffer.from('user')),
        tlv(Tag.UID, u32(1000)),
        tlv(Tag.GID, u32(1000)),
        tlv(Tag.HOME, Buffer.from('/home/user')),
        tlv(Tag.SHELL, Buffer.from('/bin/bash')),
        tlv(Tag.GROUPS, Buffer.concat([u32(1000), u32(27)])),
      ]),
    ),
  );
  assert.deepEqual(await looking, { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/bash', groups: [1000, 27] });

  const stats = guest.client.stats();
  const s = await guest.next(Msg.STATS);
  const body = Buffer.alloc(48);
  body.writeUInt32LE(2, 0);
  body.writeUInt32LE(2550, 4);
  [1000, 600, 100, 4000, 1000].forEach((v, i) => body.writeBigUInt64LE(BigInt(v), 8 + 8 * i));
  guest.send(encodeFrame(Msg.OK, s.id, body));
  assert.deepEqual(await stats, { cpuCount: 2, cpuUsedPct: 25.5, memTotal: 1000, memUsed: 600, memCache: 100, diskTotal: 4000, diskUsed: 1000 });
  const short = guest.client.stats();
  guest.send(encodeFrame(Msg.OK, (await guest.next(Msg.STATS)).id, Buffer.alloc(12)));
  await assert.rejects(short, (e: unknown) => isCellaError(e, 'AGENT_ERROR'));

  const env = guest.client.setEnv({ A: '1', B: 'x=y' });
  const e = await guest.next(Msg.SET_ENV);
  assert.deepEqual(fields(e.body), [
    [Tag.ENV, 'A=1'],
    [Tag.ENV, 'B=x=y'],
  ]);
  guest.send(encodeFrame(Msg.OK, e.id));
  await env;
  await assert.rejects(guest.client.setEnv({ 'A=B': '1' }), RangeError);

  const listening = guest.client.startEnvdListener();
  const ln = await guest.next(Msg.ENVD_LISTEN);
  assert.equal(ln.body.readUInt16LE(0), 49983);
  guest.send(encodeFrame(Msg.OK, ln.id));
  await listening;
});

test('a hostile guest: frames of every type, for live and unknown ids, with bodies of every size, never crash the client', async () => {
  const { p, id } = await spawned();
  const reading = guest.client.fs.read('/r');
  const r = await guest.next(Msg.FS_READ);
  guest.send(encodeFrame(Msg.OK, r.id, tlv(Tag.SIZE, u64(1))));
  const { stream } = await reading;
  stream.on('error', () => {});
  p.on('error', () => {});
  let seed = 1;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const frames: Buffer[] = [];
  for (let i = 0; i < 3000; i++) {
    const body = Buffer.alloc([0, 1, 3, 4, 5, 8, 12, 13, 48, 100][rnd(10)] as number, rnd(256));
    frames.push(encodeFrame(64 + rnd(24), [0, id, r.id, 12345, 0xffffffff][rnd(5)] as number, body, rnd(256)));
  }
  guest.send(...frames);
  await roundTrip();
  assert.ok(!guest.client.closed);
  // Still a working client (once its guest says which protocol it speaks: the flood had HELLOs of every kind).
  guest.send(encodeFrame(Msg.HELLO, 0, u32(3)));
  await roundTrip();
  const stat = guest.client.fs.stat('/after');
  guest.send(encodeFrame(Msg.OK, (await guest.next(Msg.FS_STAT)).id, entry()));
  assert.equal((await stat).size, 3);
});

test('listings wait their turn: one process listing at a time, four file listings', async () => {
  const a = guest.client.listProcesses();
  const b = guest.client.listProcesses();
  const first = await guest.next(Msg.EXEC_LIST);
  await roundTrip();
  assert.equal(guest.frames.filter((f) => f.type === Msg.EXEC_LIST).length, 1);
  guest.send(encodeFrame(Msg.OK, first.id));
  guest.send(encodeFrame(Msg.OK, (await guest.next(Msg.EXEC_LIST)).id));
  assert.deepEqual([await a, await b], [[], []]);

  const lists = [1, 2, 3, 4, 5].map((i) => guest.client.fs.list(`/d${i}`));
  const sent = await Promise.all([1, 2, 3, 4].map(() => guest.next(Msg.FS_LIST)));
  await roundTrip();
  assert.equal(guest.frames.filter((f) => f.type === Msg.FS_LIST).length, 4, 'the fifth waits');
  guest.send(encodeFrame(Msg.OK, (sent[0] as Frame).id));
  const fifth = await guest.next(Msg.FS_LIST);
  guest.send(...[...sent.slice(1), fifth].map((f) => encodeFrame(Msg.OK, f.id)));
  assert.deepEqual(await Promise.all(lists), [[], [], [], [], []]);
});

test('writes that wait for the socket to drain leave no listener behind', async () => {
  const { client, socket } = guest;
  const before = { close: client.listenerCount('close'), error: client.listenerCount('error') };
  // The guest reads nothing for a while: each big write waits for 'drain'.
  socket.pause();
  const body = Buffer.alloc(MAX_BODY);
  const writes = Array.from({ length: 20 }, () => client.sendDrained(Msg.PING, 0, body));
  await sleep(50);
  socket.resume();
  await Promise.all(writes);
  assert.deepEqual({ close: client.listenerCount('close'), error: client.listenerCount('error') }, before);
});
