import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { decodeWaitStatus } from './process.js';
import {
  FrameDecoder,
  FsOp,
  HEADER_LEN,
  MAX_BODY,
  MAX_GUEST_BODY,
  Msg,
  PROTOCOL_VERSION,
  Tag,
  decodeRecords,
  encodeClock,
  encodeEnv,
  encodeFrame,
  encodePtyOpen,
  encodeRequest,
  encodeSpec,
  encodeWinsize,
  tlv,
} from './protocol.js';

/** [tag, value] of every TLV record of a spec body. */
function records(b: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  for (let off = 0; off < b.length;) {
    const len = b.readUInt32LE(off + 1);
    out.push([b.readUInt8(off), b.subarray(off + 5, off + 5 + len)]);
    off += 5 + len;
  }
  return out;
}

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
      [
        [Msg.OK, 1, 0, ''],
        [Msg.EXEC_OUT, 7, 1, 'output'],
        [Msg.PONG, 9, 0, ''],
      ],
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
  for (let off = 0; off < b.length;) {
    const tag = b.readUInt8(off);
    const len = b.readUInt32LE(off + 1);
    const v = b.subarray(off + 5, off + 5 + len);
    records.push([tag, tag === 4 || tag === 5 ? String(v.readUInt32LE(0)) : v.toString()]);
    off += 5 + len;
  }
  assert.deepEqual(records, [
    [1, '/bin/echo'],
    [1, 'a b'],
    [2, 'K=v'],
    [3, '/tmp'],
    [4, '1000'],
    [5, '7'],
    [6, 'in'],
  ]);
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

test('message types, tags and limits are those of guest/init/protocol.h', () => {
  const h = readFileSync(new URL('../../guest/init/protocol.h', import.meta.url), 'utf8');
  const enumOf = (prefix: string): Record<string, number> =>
    Object.fromEntries([...h.matchAll(new RegExp(`^\\s*${prefix}_(\\w+) = (\\d+),`, 'gm'))].map((m) => [m[1] as string, Number(m[2])]));
  assert.deepEqual(enumOf('MSG'), { ...Msg });
  assert.deepEqual(enumOf('TAG'), { ...Tag });
  assert.deepEqual(enumOf('FS_OP'), { ...FsOp });
  const define = (name: string): string => new RegExp(`#define ${name} (.+)`).exec(h)?.[1]?.trim() ?? '';
  assert.equal(Number(define('CELLA_PROTOCOL_VERSION')), PROTOCOL_VERSION);
  assert.equal(Number(define('CELLA_HEADER_LEN')), HEADER_LEN);
  assert.equal(define('CELLA_MAX_BODY'), '(1u << 20)');
  assert.equal(MAX_BODY, 1 << 20);
  assert.equal(Number(define('CELLA_MAX_OUT')), MAX_GUEST_BODY);
});

test('PTY_OPEN is a spec whose argv may be empty, plus the size as u16 rows, u16 cols', () => {
  const b = encodePtyOpen({ argv: ['/bin/sh', '-l'], env: { TERM: 'vt100' }, cwd: '/root', uid: 0, rows: 40, cols: 132, stdin: Buffer.from('ls\n') });
  assert.deepEqual(
    records(b).map(([t, v]) => [t, t === Tag.WINSIZE ? [v.readUInt16LE(0), v.readUInt16LE(2)] : t === Tag.UID ? v.readUInt32LE(0) : v.toString()]),
    [
      [Tag.ARG, '/bin/sh'],
      [Tag.ARG, '-l'],
      [Tag.ENV, 'TERM=vt100'],
      [Tag.CWD, '/root'],
      [Tag.UID, 0],
      [Tag.STDIN, 'ls\n'],
      [Tag.WINSIZE, [40, 132]],
    ],
  );
  // No argv: the guest's default shell.
  assert.deepEqual(records(encodePtyOpen({ rows: 24, cols: 80 })), [[Tag.WINSIZE, Buffer.from([24, 0, 80, 0])]]);
  assert.deepEqual(records(encodePtyOpen({ argv: [], rows: 1, cols: 65535 })), [[Tag.WINSIZE, Buffer.from([1, 0, 0xff, 0xff])]]);
  // EXEC keeps refusing an empty argv.
  assert.throws(() => encodeSpec({ argv: [] }), RangeError);
});

test('PTY_RESIZE body is u16 rows, u16 cols; sizes out of range are refused', () => {
  assert.deepEqual([...encodeWinsize(50, 200)], [50, 0, 200, 0]);
  assert.deepEqual([...encodeWinsize(0x1234, 0x0102)], [0x34, 0x12, 0x02, 0x01]);
  for (const [r, c] of [
    [0, 80],
    [24, 0],
    [65536, 80],
    [24, 1.5],
    [Number.NaN, 80],
    [-1, 80],
  ] as const) {
    assert.throws(() => encodeWinsize(r, c), RangeError, `${r}x${c}`);
    assert.throws(() => encodePtyOpen({ rows: r, cols: c }), RangeError);
  }
});

test('terminal and signal frames round-trip through the decoder', () => {
  const status = Buffer.alloc(4);
  status.writeInt32LE(3 << 8, 0);
  const stream = Buffer.concat([
    encodeFrame(Msg.PTY_IN, 5, Buffer.from('echo hi\r')),
    encodeFrame(Msg.PTY_RESIZE, 5, encodeWinsize(30, 100)),
    encodeFrame(Msg.PTY_CLOSE, 5),
    encodeFrame(Msg.PTY_OUT, 5, Buffer.from('hi\r\n'), 1),
    encodeFrame(Msg.PTY_EXIT, 5, status),
    encodeFrame(Msg.ACTIVITY, 0),
    encodeFrame(Msg.SUSPEND_REQUEST, 0),
  ]);
  const frames = new FrameDecoder().push(stream);
  assert.deepEqual(
    frames.map((f) => [f.type, f.id, f.stream, f.body.toString('hex')]),
    [
      [10, 5, 0, Buffer.from('echo hi\r').toString('hex')],
      [11, 5, 0, '1e006400'],
      [12, 5, 0, ''],
      [72, 5, 1, Buffer.from('hi\r\n').toString('hex')],
      [73, 5, 0, '00030000'],
      [74, 0, 0, ''],
      [75, 0, 0, ''],
    ],
  );
  assert.deepEqual(decodeWaitStatus(frames[4]?.body.readInt32LE(0) ?? -1), { exitCode: 3, signal: null });
});

test('protocol-3 spec records: groups as u32s, a label, the stdin pipe flag; ids out of range are refused', () => {
  const b = encodeSpec({ argv: ['/bin/sh'], uid: 1000, groups: [1000, 27], label: 'job', stdinPipe: true });
  assert.deepEqual(
    records(b).map(([t, v]) => [t, t === Tag.GROUPS ? [v.readUInt32LE(0), v.readUInt32LE(4)] : t === Tag.UID ? v.readUInt32LE(0) : v.toString()]),
    [
      [Tag.ARG, '/bin/sh'],
      [Tag.UID, 1000],
      [Tag.GROUPS, [1000, 27]],
      [Tag.LABEL, 'job'],
      [Tag.STDIN_PIPE, ''],
    ],
  );
  assert.deepEqual(records(encodeSpec({ argv: ['x'], groups: [] })), [
    [Tag.ARG, Buffer.from('x')],
    [Tag.GROUPS, Buffer.alloc(0)],
  ]);
  for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) {
    assert.throws(() => encodeSpec({ argv: ['x'], uid: bad }), RangeError);
    assert.throws(() => encodeSpec({ argv: ['x'], groups: [bad] }), RangeError);
  }
});

test('file requests: paths as bytes, numbers as u32, flags empty, attributes as name NUL value; bad input refused', () => {
  const b = encodeRequest({ path: '/a b/é', dest: '/d', uid: 1, gid: 2, mode: 0o755, depth: 3, credit: 4, recursive: true, xattrs: { 'user.e2b.k': 'v' } });
  assert.deepEqual(
    records(b).map(([t, v]) => [t, [Tag.PATH, Tag.DEST, Tag.XATTR].includes(t as never) ? v.toString() : v.length ? v.readUInt32LE(0) : '']),
    [
      [Tag.PATH, '/a b/é'],
      [Tag.DEST, '/d'],
      [Tag.UID, 1],
      [Tag.GID, 2],
      [Tag.MODE, 0o755],
      [Tag.DEPTH, 3],
      [Tag.CREDIT, 4],
      [Tag.RECURSIVE, ''],
      [Tag.XATTR, 'user.e2b.k\0v'],
    ],
  );
  assert.equal(encodeRequest({ recursive: false }).length, 0);
  assert.throws(() => encodeRequest({ path: '' }), RangeError);
  assert.throws(() => encodeRequest({ path: 'a\0b' }), RangeError);
  assert.throws(() => encodeRequest({ mode: -1 }), RangeError);
  assert.throws(() => encodeRequest({ xattrs: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`user.e2b.${i}`, ''])) }), RangeError);
  assert.deepEqual(
    records(encodeEnv({ A: '1', B: 'x=y', C: '' })).map(([, v]) => v.toString()),
    ['A=1', 'B=x=y', 'C='],
  );
  for (const bad of [{ '': 'x' }, { 'A=B': 'x' }, { A: 'x\0' }] as Record<string, string>[]) assert.throws(() => encodeEnv(bad), RangeError);
});

test('decodeRecords takes whole records only: any cut or overlong length is undefined, never a throw', () => {
  const body = Buffer.concat([tlv(Tag.PATH, Buffer.from('/x')), tlv(Tag.UID, Buffer.alloc(4)), tlv(Tag.RECURSIVE)]);
  assert.equal(decodeRecords(body)?.length, 3);
  for (let cut = 0; cut < body.length; cut++) {
    const r = decodeRecords(body.subarray(0, cut));
    assert.ok(cut === 0 || cut === 7 || cut === 16 ? r !== undefined : r === undefined, `cut at ${cut}`);
  }
  const long = Buffer.from(body);
  long.writeUInt32LE(0xffffffff, 1);
  assert.equal(decodeRecords(long), undefined);
});
