import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IDLE_PARAMS } from '../vmm/index.js';
import { deviceModel } from './spawn.js';

test('a snapshot fingerprint covers the QEMU command line and the guest kernel command line, not the TSC rate', () => {
  const tcg = deviceModel('tcg');
  const at = tcg.machine.indexOf('-cpu');
  assert.deepEqual(tcg.machine.slice(at, at + 2), ['-cpu', 'qemu64,+arat']);
  for (const p of IDLE_PARAMS) assert.ok(tcg.cmdline.split(' ').includes(p), p);
  assert.ok(!tcg.cmdline.includes('tsc_early_khz'));
  assert.notDeepEqual(deviceModel('kvm').machine, tcg.machine);
});
