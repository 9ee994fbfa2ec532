import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { be32, CONFIGURATION, MAGIC_V3, str } from '../../test/fixtures/migration-bytes.js';
import { configurationSection, dirtyRuns } from './checkpoint.js';

test('dirty pages are grouped into runs', () => {
  assert.deepEqual(dirtyRuns(new Uint8Array([0, 1, 1, 0, 1, 0, 0, 1])), [
    { first: 1, pages: 2 },
    { first: 4, pages: 1 },
    { first: 7, pages: 1 },
  ]);
  assert.deepEqual(dirtyRuns(new Uint8Array(4)), []);
});

test('the configuration section is cut from a stream, capabilities included', () => {
  const stream = Buffer.concat([MAGIC_V3, CONFIGURATION, Buffer.from([0x04, 0, 0, 0, 1])]);
  assert.deepEqual(configurationSection(stream), CONFIGURATION);
});

test('a stream without a configuration section or with an unknown subsection is refused', () => {
  const refused = (b: Buffer): void =>
    assert.throws(
      () => configurationSection(b),
      (e) => isCellaError(e, 'MIGRATION_STREAM_INVALID'),
    );
  refused(Buffer.concat([MAGIC_V3, Buffer.from([0x04])]));
  refused(Buffer.from('not a stream at all'));
  refused(Buffer.concat([MAGIC_V3, Buffer.from([0x07]), be32(1), Buffer.from('m'), Buffer.from([0x05]), str('configuration/other'), be32(1)]));
});
