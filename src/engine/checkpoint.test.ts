import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { configurationSection, dirtyRuns } from './checkpoint.js';

test('dirty pages are grouped into runs', () => {
  assert.deepEqual(dirtyRuns(new Uint8Array([0, 1, 1, 0, 1, 0, 0, 1])), [
    { first: 1, pages: 2 },
    { first: 4, pages: 1 },
    { first: 7, pages: 1 },
  ]);
  assert.deepEqual(dirtyRuns(new Uint8Array(4)), []);
});

const str = (s: string): Buffer => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]);
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const QEVM = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);

test('the configuration section is cut from a stream, capabilities included', () => {
  const config = Buffer.concat([
    Buffer.from([0x07]),
    u32(7),
    Buffer.from('microvm'),
    Buffer.from([0x05]),
    str('configuration/capabilities'),
    u32(1),
    u32(1),
    str('x-ignore-shared'),
  ]);
  const stream = Buffer.concat([QEVM, config, Buffer.from([0x04, 0, 0, 0, 1])]);
  assert.deepEqual(configurationSection(stream), config);
});

test('a stream without a configuration section or with an unknown subsection is refused', () => {
  const refused = (b: Buffer): void =>
    assert.throws(
      () => configurationSection(b),
      (e) => isCellaError(e, 'MIGRATION_STREAM_INVALID'),
    );
  refused(Buffer.concat([QEVM, Buffer.from([0x04])]));
  refused(Buffer.from('not a stream at all'));
  refused(Buffer.concat([QEVM, Buffer.from([0x07]), u32(1), Buffer.from('m'), Buffer.from([0x05]), str('configuration/other'), u32(1)]));
});
