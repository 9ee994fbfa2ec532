/**
 * Decoders of what cella-init answers: well-formed bodies come through whole;
 * a hostile guest's bodies (cut, mutated, random) give undefined, never a throw.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Tag, tlv, u32 } from './protocol.js';
import { decodeEntry, decodeInAck, decodeProcInfo, decodeSize, decodeStats, decodeUser, fileType } from './replies.js';

const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n, 0);
  return b;
};

function mtime(sec: bigint, nsec: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeBigInt64LE(sec, 0);
  b.writeUInt32LE(nsec, 8);
  return b;
}

const ENTRY = Buffer.concat([
  tlv(Tag.MODE, u32(0o40755)),
  tlv(Tag.SIZE, u64(4096n)),
  tlv(Tag.MTIME, mtime(-1n, 999_999_999)),
  tlv(Tag.UID, u32(0)),
  tlv(Tag.GID, u32(0)),
]);

test('file types come from the st_mode type bits', () => {
  assert.deepEqual([0o100644, 0o40755, 0o120777, 0o20666, 0o10644, 0].map(fileType), ['file', 'directory', 'symlink', 'other', 'other', 'other']);
});

test('an entry needs its mode, size, time and ids; optional parts are optional; odd values are refused', () => {
  assert.deepEqual(decodeEntry(ENTRY), { type: 'directory', mode: 0o40755, size: 4096, mtimeMs: -1, uid: 0, gid: 0, metadata: {} });
  for (const drop of [Tag.MODE, Tag.SIZE, Tag.MTIME, Tag.UID, Tag.GID]) {
    const body = Buffer.concat([ENTRY, tlv(Tag.PATH, Buffer.from('/x'))]);
    const without = Buffer.concat([
      ...[Tag.MODE, Tag.SIZE, Tag.MTIME, Tag.UID, Tag.GID]
        .filter((t) => t !== drop)
        .map((t) => (t === Tag.SIZE ? tlv(t, u64(1n)) : t === Tag.MTIME ? tlv(t, mtime(0n, 0)) : tlv(t, u32(1)))),
    ]);
    assert.ok(decodeEntry(body));
    assert.equal(decodeEntry(without), undefined, `without tag ${drop}`);
  }
  assert.equal(decodeEntry(Buffer.concat([ENTRY, tlv(Tag.SIZE, u64(2n ** 60n))])), undefined, 'a size past 2^53');
  assert.equal(decodeEntry(Buffer.concat([ENTRY, tlv(Tag.MTIME, mtime(0n, 1_000_000_000))])), undefined, 'nanoseconds of a second or more');
  assert.equal(decodeEntry(Buffer.concat([ENTRY, tlv(Tag.UID, Buffer.alloc(3))])), undefined);
  const xattr = (v: string): Buffer => tlv(Tag.XATTR, Buffer.from(v));
  const e = decodeEntry(
    Buffer.concat([ENTRY, xattr('user.e2b.a\0one'), xattr('user.e2b.b\0'), xattr('nonul'), xattr('\0v'), xattr('user.x\0y'), tlv(99, Buffer.from('future'))]),
  );
  assert.deepEqual(e?.metadata, { a: 'one', b: '' });
});

test('users, processes, stats, sizes and acks: each exact shape, or undefined', () => {
  const user = Buffer.concat([tlv(Tag.NAME, Buffer.from('u')), tlv(Tag.UID, u32(5)), tlv(Tag.GID, u32(6)), tlv(Tag.GROUPS, Buffer.concat([u32(6), u32(7)]))]);
  assert.deepEqual(decodeUser(user), { name: 'u', uid: 5, gid: 6, home: '', shell: '', groups: [6, 7] });
  assert.equal(decodeUser(Buffer.concat([user, tlv(Tag.GROUPS, Buffer.alloc(5))])), undefined);
  const proc = Buffer.concat([tlv(Tag.ID, u32(1)), tlv(Tag.PID, u32(2)), tlv(Tag.KIND, Buffer.from([2]))]);
  assert.deepEqual(decodeProcInfo(proc), { id: 1, pid: 2, kind: 'pty', argv: [], env: {}, truncated: false });
  assert.equal(decodeProcInfo(Buffer.concat([tlv(Tag.ID, u32(1)), tlv(Tag.PID, u32(2)), tlv(Tag.KIND, Buffer.from([3]))])), undefined);
  assert.equal(decodeProcInfo(Buffer.concat([proc, tlv(Tag.STATUS, Buffer.alloc(2))])), undefined);
  assert.equal(decodeStats(Buffer.alloc(47)), undefined);
  const stats = Buffer.alloc(48);
  stats.writeUInt32LE(10001, 4);
  assert.equal(decodeStats(stats), undefined, 'over 100 %');
  assert.equal(decodeSize(tlv(Tag.SIZE, u64(7n))), 7);
  assert.equal(decodeSize(tlv(Tag.SIZE, u32(7))), undefined);
  assert.deepEqual(decodeInAck(Buffer.concat([u32(3), u32(32)])), { bytes: 3, errno: 32 });
  assert.equal(decodeInAck(Buffer.alloc(7)), undefined);
});

test('any cut, flip or garbage of a good body decodes to undefined or a value, never a throw', () => {
  const bodies = [
    ENTRY,
    Buffer.concat([
      tlv(Tag.ID, u32(1)),
      tlv(Tag.PID, u32(2)),
      tlv(Tag.KIND, Buffer.from([1])),
      tlv(Tag.ARG, Buffer.from('sh')),
      tlv(Tag.ENV, Buffer.from('=x')),
    ]),
    Buffer.concat([tlv(Tag.NAME, Buffer.from('u')), tlv(Tag.UID, u32(5)), tlv(Tag.GID, u32(6)), tlv(Tag.GROUPS, u32(6))]),
    Buffer.alloc(48, 0xff),
  ];
  const decoders = [decodeEntry, decodeProcInfo, decodeUser, decodeStats, decodeSize, decodeInAck];
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 48271) % 2147483647;
    return seed % n;
  };
  for (let i = 0; i < 20_000; i++) {
    const base = bodies[rnd(bodies.length)] as Buffer;
    const b = Buffer.from(base.subarray(0, rnd(base.length + 1)));
    for (let k = rnd(4); k > 0 && b.length; k--) b[rnd(b.length)] = rnd(256);
    const body = rnd(5) === 0 ? Buffer.concat([b, Buffer.from(Array.from({ length: rnd(12) }, () => rnd(256)))]) : b;
    for (const d of decoders) assert.doesNotThrow(() => d(body));
  }
});
