import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BuildFailure } from '../contract/index.js';
import { resolveUser } from './users.js';

const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n';
const group = 'root:x:0:\nstaff:x:50:\napp:x:1001:\n';

test('names, numbers and groups resolve against the image tables', () => {
  assert.deepEqual(resolveUser('', passwd, group, 3), { uid: 0, gid: 0 });
  assert.deepEqual(resolveUser('app', passwd, group, 3), { uid: 1000, gid: 1001 });
  assert.deepEqual(resolveUser('app:staff', passwd, group, 3), { uid: 1000, gid: 50 });
  assert.deepEqual(resolveUser('1000', passwd, group, 3), { uid: 1000, gid: 1001 });
  assert.deepEqual(resolveUser('4242:77', passwd, group, 3), { uid: 4242, gid: 77 });
  assert.deepEqual(resolveUser('4242', passwd, group, 3), { uid: 4242, gid: 0 });
});

test('an unknown user or group names the line', () => {
  assert.throws(
    () => resolveUser('nobody', passwd, group, 7),
    (e: unknown) => e instanceof BuildFailure && e.reason === 'CONTAINER_BUILD_FAILED' && /line 7: user nobody/.test(e.message),
  );
  assert.throws(
    () => resolveUser('app:wheel', passwd, group, 2),
    (e: unknown) => e instanceof BuildFailure && /group wheel/.test(e.message),
  );
});
