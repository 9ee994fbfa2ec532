import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BUILDER_UID_BASE, VM_UID_BASE, jailPath, vmJail } from './jail.js';

test("a VM's uid comes from its network slot and never reaches the builders' range", () => {
  assert.deepEqual(vmJail(7, '/d/vms/a'), { uid: VM_UID_BASE + 7, gid: VM_UID_BASE + 7, chroot: '/d/vms/a' });
  assert.throws(() => vmJail(BUILDER_UID_BASE - VM_UID_BASE, '/d'), RangeError);
  assert.throws(() => vmJail(-1, '/d'), RangeError);
});

test('paths are given to a chrooted QEMU relative to its root', () => {
  const jail = vmJail(1, '/d/vms/a');
  assert.equal(jailPath(jail, '/d/vms/a/migrate.sock'), '/migrate.sock');
  assert.equal(jailPath(jail, '/d/vms/a/incoming/migrate.sock'), '/incoming/migrate.sock');
  assert.throws(() => jailPath(jail, '/d/vms/b/migrate.sock'), RangeError);
  assert.equal(jailPath({ uid: 300001, gid: 300001 }, '/x/l.qcow2'), '/x/l.qcow2');
  assert.equal(jailPath(undefined, '/x/l.qcow2'), '/x/l.qcow2');
});
