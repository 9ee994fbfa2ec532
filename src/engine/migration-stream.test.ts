import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { be32, be64, CONFIGURATION, MAGIC_V3, str } from '../../test/fixtures/migration-bytes.js';
import { filterMigrationStream } from './migration-stream.js';

// A synthetic QEMU 7.2 stream: header, configuration, RAM setup/part/end, device state, EOF.
const page = (fill: number) => Buffer.alloc(4096, fill);
const ZERO = 0x02n,
  MEM_SIZE = 0x04n,
  PAGE = 0x08n,
  EOS = 0x10n,
  CONT = 0x20n;

/** The magic, version 3 and the configuration section (machine `microvm`, capability x-ignore-shared) every stream starts with. */
const HEADER = [MAGIC_V3, CONFIGURATION];

function stream(): Buffer {
  return Buffer.concat([
    ...HEADER,
    // setup: two blocks, "mem" 3 pages and "rom" 1 page, with mr addr (ignore-shared)
    Buffer.from([0x01]),
    be32(2),
    str('ram'),
    be32(0),
    be32(4),
    be64((4n * 4096n) | MEM_SIZE),
    str('mem'),
    be64(3n * 4096n),
    be64(0n),
    str('rom'),
    be64(4096n),
    be64(0n),
    be64(EOS),
    Buffer.from([0x7e]),
    be32(2),
    // part: mem page 0 (names block), page 1 (continue), rom page 0 (names), mem page 2 zero
    Buffer.from([0x02]),
    be32(2),
    be64(0n | PAGE),
    str('mem'),
    page(0xa0),
    be64(4096n | PAGE | CONT),
    page(0xa1),
    be64(0n | PAGE),
    str('rom'),
    page(0xb0),
    be64(8192n | ZERO),
    str('mem'),
    Buffer.from([0]),
    be64(EOS),
    Buffer.from([0x7e]),
    be32(2),
    Buffer.from([0x03]),
    be32(2),
    be64(EOS),
    Buffer.from([0x7e]),
    be32(2),
    // device state (opaque) and EOF
    Buffer.from([0x04]),
    be32(3),
    str('serial'),
    be32(0),
    be32(1),
    Buffer.from('opaque-device-bytes'),
    Buffer.from([0x08]),
  ]);
}

async function* chunks(b: Buffer, size: number) {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function filter(input: Buffer, keep: (block: string, off: number) => boolean, chunk = 7) {
  const out: Buffer[] = [];
  const stats = await filterMigrationStream(chunks(input, chunk), (b) => void out.push(Buffer.from(b)), keep);
  return { out: Buffer.concat(out), stats };
}

test('keeping every page reproduces the stream byte for byte', async () => {
  for (const size of [1, 5, 4096, 1 << 20]) {
    const { out, stats } = await filter(stream(), () => true, size);
    assert.deepEqual(out, stream());
    assert.equal(stats.pagesIn, 4);
    assert.equal(stats.pagesOut, 4);
    assert.deepEqual(
      [...stats.blocks],
      [
        ['mem', 3 * 4096],
        ['rom', 4096],
      ],
    );
  }
});

test('dropped pages leave no trace and the next kept page names its block again', async () => {
  // Drop mem page 0 (which named the block): page 1 must now carry the name, without CONTINUE.
  const { out, stats } = await filter(stream(), (block, off) => !(block === 'mem' && off === 0));
  assert.equal(stats.pagesOut, 3);
  const expected = Buffer.concat([be64(4096n | PAGE), str('mem'), page(0xa1)]);
  assert.ok(out.includes(expected), 'page 1 re-names its block');
  assert.ok(!out.includes(page(0xa0)), 'dropped page is gone');
  // mem page 2 follows rom: it names mem again (as in the input).
  assert.ok(out.includes(Buffer.concat([be64(8192n | ZERO), str('mem'), Buffer.from([0])])));
  assert.ok(out.subarray(-20).includes(Buffer.from('opaque-device-bytes')), 'device state copied verbatim');
  // Re-filtering the output keeping everything is the identity: the output is itself a valid stream.
  assert.deepEqual((await filter(out, () => true)).out, out);
});

test('a page that continues the last written block keeps CONTINUE', async () => {
  // Drop the rom page: mem page 2 (zero) then follows mem page 1 and must continue.
  const { out } = await filter(stream(), (block) => block !== 'rom');
  assert.ok(out.includes(Buffer.concat([be64(8192n | ZERO | CONT), Buffer.from([0])])));
});

test('bad input is refused with MIGRATION_STREAM_INVALID', async () => {
  const bad = [
    Buffer.from('not a stream at all'),
    stream().subarray(0, 200), // truncated in the middle of RAM
    Buffer.concat([stream().subarray(0, 8), Buffer.from([0x42])]), // unknown section type
  ];
  for (const b of bad) {
    await assert.rejects(
      filter(b, () => true),
      (err) => isCellaError(err, 'MIGRATION_STREAM_INVALID'),
    );
  }
  // Cut anywhere inside the page records: never a silently shorter checkpoint. Each cut is read whole
  // and in 13-byte chunks (a size no record field lines up with); the cuts inside a record's header,
  // and the last byte of its page, are also read a byte at a time from that record's start (the bytes
  // before it come as one chunk, which any reader state reaches the same way).
  const full = stream();
  const first = full.indexOf(Buffer.concat([be64(0n | PAGE), str('mem')]));
  const records = [first, first + 4108, first + 4108 + 4104, first + 4108 + 4104 + 4108];
  const cutShort = (cut: number, chunked: AsyncIterable<Buffer>) =>
    assert.rejects(
      filterMigrationStream(
        chunked,
        () => {},
        () => true,
      ),
      (err) => isCellaError(err, 'MIGRATION_STREAM_INVALID'),
      `cut at ${cut}`,
    );
  for (let cut = first; cut < first + 3 * 4105; cut += 97) {
    for (const chunk of [13, 1 << 20]) await cutShort(cut, chunks(full.subarray(0, cut), chunk));
  }
  for (const start of records) {
    const end = records.find((r) => r > start) ?? start + 13;
    const cuts = [...Array.from({ length: 12 }, (_, i) => start + i), end - 1];
    for (const cut of cuts) {
      await cutShort(
        cut,
        (async function* () {
          yield full.subarray(0, start);
          yield* chunks(full.subarray(start, cut), 1);
        })(),
      );
    }
  }
  // Compressed pages (flag 0x100) are not something this filter may guess at.
  const compressed = stream();
  const at = compressed.indexOf(Buffer.concat([be64(0n | PAGE), str('mem')]));
  compressed.writeBigUInt64BE(0x100n, at);
  await assert.rejects(
    filter(compressed, () => true),
    (err) => isCellaError(err, 'MIGRATION_STREAM_INVALID'),
  );
});

test('pages at 2 GiB and above (a guest of 3 GiB or more) pass through and are dropped like any other', async () => {
  const big = Buffer.concat([
    ...HEADER,
    Buffer.from([0x01]),
    be32(2),
    str('ram'),
    be32(0),
    be32(4),
    be64((4n * 2n ** 30n) | MEM_SIZE),
    str('mem'),
    be64(4n * 2n ** 30n),
    be64(0n),
    be64(EOS),
    Buffer.from([0x7e]),
    be32(2),
    Buffer.from([0x02]),
    be32(2),
    be64(0n | PAGE),
    str('mem'),
    page(0xa0),
    be64(0x80000000n | PAGE | CONT),
    page(0xa1),
    be64(0xc0040000n | PAGE | CONT),
    page(0xa2),
    be64(EOS),
    Buffer.from([0x7e]),
    be32(2),
    Buffer.from([0x08]),
  ]);
  const all = await filter(big, () => true);
  assert.ok(all.out.equals(big), 'kept whole, byte for byte');
  const high = await filter(big, (_b, off) => off >= 0x80000000);
  assert.equal(high.stats.pagesOut, 2);
  // The first kept page names its block again (no CONTINUE), at its own high address.
  assert.ok(high.out.includes(Buffer.concat([be64(0x80000000n | PAGE), str('mem'), page(0xa1)])));
  assert.ok(high.out.includes(Buffer.concat([be64(0xc0040000n | PAGE | CONT), page(0xa2)])));
});
