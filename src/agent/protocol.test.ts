import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeWaitStatus } from './client.js';
import { FrameDecoder, HEADER_LEN, MAX_BODY, Msg, encodeClock, encodeFrame, encodeSpec } from './protocol.js';

test('frame header layout matches guest/init/protocol.h', () => {
  const f = encodeFrame(Msg.EXEC, 0x01020304, Buffer.from('hi'), 2);
  assert.equal(f.length, HEADER_LEN + 2);
  assert.deepEqual([...f.subarray(0, HEADER_LEN)], [2, 0, 0, 0, Msg.EXEC, 2, 0, 0, 4, 3, 2, 1]);
  assert.equal(f.subarray(HEADER_LEN).toString(), 'hi');
});

test('decoder reassembles frames split at every byte boundary', () => {
  const stream = Buffer.concat([encodeFrame(Msg.OK, 1), encodeFrame(Msg.EXEC_OUT, 7, Buffer.from('output'), 1), encodeFrame(Msg.PONG, 9)]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new FrameDecoder();
    const frames = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    assert.deepEqual(
      frames.map((f) => [f.type, f.id, f.stream, f.body.toString()]),
      [[Msg.OK, 1, 0, ''], [Msg.EXEC_OUT, 7, 1, 'output'], [Msg.PONG, 9, 0, '']],
    );
  }
});

test('decoder refuses a length the guest can never send', () => {
  const head = Buffer.alloc(HEADER_LEN);
  head.writeUInt32LE(MAX_BODY + 1, 0);
  assert.throws(() => new FrameDecoder().push(head), RangeError);
  assert.throws(() => encodeFrame(Msg.EXEC, 1, Buffer.alloc(MAX_BODY + 1)), RangeError);
});

test('spec is TLV records: args, env, cwd, uid, gid, stdin', () => {
  const b = encodeSpec({ argv: ['/bin/echo', 'a b'], env: { K: 'v' }, cwd: '/tmp', uid: 1000, gid: 7, stdin: Buffer.from('in') });
  const records: [number, string][] = [];
  for (let off = 0; off < b.length; ) {
    const tag = b.readUInt8(off);
    const len = b.readUInt32LE(off + 1);
    const v = b.subarray(off + 5, off + 5 + len);
    records.push([tag, tag === 4 || tag === 5 ? String(v.readUInt32LE(0)) : v.toString()]);
    off += 5 + len;
  }
  assert.deepEqual(records, [[1, '/bin/echo'], [1, 'a b'], [2, 'K=v'], [3, '/tmp'], [4, '1000'], [5, '7'], [6, 'in']]);
  assert.throws(() => encodeSpec({ argv: [] }), RangeError);
});

test('clock is seconds (i64) and nanoseconds (u32)', () => {
  const b = encodeClock(1_700_000_000_123.5);
  assert.equal(b.readBigInt64LE(0), 1_700_000_000n);
  assert.equal(b.readUInt32LE(8), 123_500_000);
});

test('wait status decodes exit codes and signals', () => {
  assert.deepEqual(decodeWaitStatus(3 << 8), { exitCode: 3, signal: null });
  assert.deepEqual(decodeWaitStatus(9), { exitCode: null, signal: 9 });
});
