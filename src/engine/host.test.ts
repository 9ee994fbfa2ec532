import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { HOST_TRANSITIONS, HostTable, canMove, type HostState } from './host.js';

interface Qemu {
  readonly pid: number;
}
const table = (): HostTable<Qemu, string, string> => new HostTable<Qemu, string, string>();
const refused = (e: unknown): boolean => isCellaError(e, 'INVALID_STATE');

const STATES = Object.keys(HOST_TRANSITIONS) as HostState[];

test('the moves of the host state are exactly these', () => {
  const allowed = new Set([
    'restoring>warm',
    'restoring>standby',
    'standby>restoring',
    'restoring>running',
    'adopting>running',
    'running>stopping',
    'stopping>running',
    'stopping>parked',
    'parked>restoring',
  ]);
  for (const from of STATES) {
    for (const to of STATES) assert.equal(canMove(from, to), allowed.has(`${from}>${to}`), `${from} → ${to}`);
    assert.equal(canMove(from, undefined), true, `${from} may end`);
  }
  const initial = STATES.filter((s) => canMove(undefined, s));
  assert.deepEqual(initial.sort(), ['adopting', 'builder', 'restoring', 'template']);
  assert.equal(canMove(undefined, undefined), false);
});

test('a VM goes restoring → running → stopping → parked → restoring → running', () => {
  const t = table();
  const q = { pid: 10 };
  t.begin('a', 'restoring');
  t.hold('a', q);
  assert.equal(t.running('a'), undefined, 'not running while it is restored');
  t.write('a', { state: 'running', qemu: q, vm: 'vm-a' });
  assert.equal(t.running('a'), 'vm-a');
  t.stop('a', q);
  assert.equal(t.entry('a')?.state, 'stopping');
  assert.equal(t.running('a'), 'vm-a', 'a stopping VM runs until it is gone');
  t.write('a', { state: 'parked', qemu: q, vm: 'vm-a', timer: setTimeout(() => {}, 0) });
  assert.equal(t.running('a'), undefined);
  assert.equal(t.parked('a')?.vm, 'vm-a');
  t.write('a', { state: 'restoring', qemu: q });
  t.write('a', { state: 'running', qemu: q, vm: 'vm-a' });
  assert.deepEqual(t.allRunning(), ['vm-a']);
});

test('a standby QEMU waits for its VM and is taken by its resume; the oldest is listed first', () => {
  const t = table();
  for (const [name, pid] of [
    ['b', 2],
    ['a', 1],
  ] as const) {
    t.begin(name, 'restoring');
    t.hold(name, { pid });
    t.write(name, { state: 'standby', qemu: { pid }, standby: `empty-${name}`, preloadedBytes: 0 });
  }
  assert.deepEqual(
    t.allStandby().map((s) => s.name),
    ['b', 'a'],
  );
  assert.equal(t.standby('a')?.standby, 'empty-a');
  assert.equal(t.running('a'), undefined, 'a standby QEMU runs no guest');
  assert.throws(() => t.begin('a', 'restoring'), refused, 'its folder is held');
  assert.throws(() => t.write('a', { state: 'running', qemu: { pid: 1 }, vm: 'vm' }), refused, 'only a resume takes it');
  t.write('a', { state: 'restoring', qemu: { pid: 1 } });
  assert.equal(t.standby('a'), undefined);
  assert.deepEqual(
    [...t.heldPids()].sort((x, y) => x - y),
    [1, 2],
  );
});

test('a refused move throws INVALID_STATE and changes nothing', () => {
  const t = table();
  const q = { pid: 1 };
  t.begin('w', 'restoring');
  t.hold('w', q);
  t.write('w', { state: 'warm', qemu: q, imageDir: '/img', warm: 'clone' });
  assert.throws(() => t.write('w', { state: 'running', qemu: q, vm: 'vm' }), refused);
  assert.equal(t.entry('w')?.state, 'warm');
  assert.throws(() => t.write('new', { state: 'running', qemu: q, vm: 'vm' }), refused, 'an entry begins in flight');
  assert.equal(t.entry('new'), undefined);
  t.begin('t', 'template');
  assert.throws(() => t.write('t', { state: 'running', qemu: q, vm: 'vm' }), refused);
  assert.equal(t.entry('t')?.state, 'template');
});

test('an operation cannot take a folder something else holds', () => {
  const t = table();
  t.begin('a', 'restoring');
  t.write('a', { state: 'running', qemu: { pid: 1 }, vm: 'vm' });
  assert.throws(() => t.begin('a', 'restoring'), refused);
  assert.throws(() => t.begin('a', 'adopting'), refused);
  assert.equal(t.entry('a')?.state, 'running');
  t.begin('b', 'builder');
  assert.throws(() => t.begin('b', 'builder'), refused);
});

test('only an operation in flight records a QEMU, and settle ends only its own hold', () => {
  const t = table();
  const q = { pid: 3 };
  assert.throws(() => t.hold('x', q), refused);
  t.begin('a', 'restoring');
  t.write('a', { state: 'running', qemu: q, vm: 'vm' });
  assert.throws(() => t.hold('a', { pid: 4 }), refused);
  t.settle('a');
  assert.equal(t.entry('a')?.state, 'running', "a supervised VM is not the operation's to drop");
  t.begin('b', 'adopting');
  t.settle('b');
  assert.equal(t.entry('b'), undefined);
});

test("an exit removes the entry of that QEMU only, never a later one or an operation's", () => {
  const t = table();
  const old = { pid: 5 };
  const later = { pid: 6 };
  t.begin('a', 'restoring');
  t.write('a', { state: 'running', qemu: later, vm: 'vm' });
  assert.equal(t.exited('a', old), false);
  assert.equal(t.entry('a')?.state, 'running');
  t.begin('b', 'restoring');
  t.hold('b', old);
  assert.equal(t.exited('b', old), false, 'the operation reports its own failure');
  assert.equal(t.entry('b')?.state, 'restoring');
  assert.equal(t.exited('a', later), true);
  assert.equal(t.entry('a'), undefined);
});

test('an exit is expected unless the VM is running', () => {
  const t = table();
  const q = { pid: 7 };
  t.begin('a', 'adopting');
  t.hold('a', q);
  t.write('a', { state: 'running', qemu: q, vm: 'vm' });
  const host = t.handle('a', q);
  assert.equal(host.exitExpected(), false, 'a crash');
  host.beginStop();
  assert.equal(t.entry('a')?.state, 'stopping');
  assert.equal(host.exitExpected(), true);
  host.beginStop();
  assert.equal(t.entry('a')?.state, 'stopping', 'asking twice is asking once');
  t.write('a', { state: 'running', qemu: q, vm: 'vm' });
  assert.equal(host.exitExpected(), false, 'runs on after a failed suspend: a crash again');
  t.write('a', undefined);
  assert.equal(host.exitExpected(), true, 'let go');
  t.begin('a', 'restoring');
  t.write('a', { state: 'running', qemu: { pid: 8 }, vm: 'vm2' });
  assert.equal(host.exitExpected(), true, 'the QEMU of an earlier incarnation');
  host.beginStop();
  assert.equal(t.entry('a')?.state, 'running', 'it cannot stop a later incarnation');
});

test("leaving parked stops the window's timer", () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const t = table();
    const q = { pid: 9 };
    let ended = 0;
    const park = (): void => {
      t.begin('a', 'restoring');
      t.write('a', { state: 'running', qemu: q, vm: 'vm' });
      t.stop('a', q);
      t.write('a', { state: 'parked', qemu: q, vm: 'vm', timer: setTimeout(() => ended++, 1000) });
    };
    park();
    t.write('a', { state: 'restoring', qemu: q });
    mock.timers.tick(2000);
    assert.equal(ended, 0, 'resumed in place');
    t.write('a', undefined);
    park();
    t.write('a', undefined);
    mock.timers.tick(2000);
    assert.equal(ended, 0, 'removed');
    park();
    mock.timers.tick(2000);
    assert.equal(ended, 1, 'still parked when the window ends');
  } finally {
    mock.timers.reset();
  }
});

test('views: warm clones per image oldest first, held pids, folders in flight', () => {
  const t = table();
  const warm = (name: string, pid: number, imageDir: string): void => {
    t.begin(name, 'restoring');
    t.write(name, { state: 'warm', qemu: { pid }, imageDir, warm: name });
  };
  warm('.warm-1', 11, '/a');
  warm('.warm-2', 12, '/b');
  warm('.warm-3', 13, '/a');
  t.begin('.template-x', 'template');
  t.begin('vm', 'restoring');
  t.hold('vm', { pid: 14 });
  assert.deepEqual(
    t.warm('/a').map((w) => w.warm),
    ['.warm-1', '.warm-3'],
  );
  assert.deepEqual(
    [...t.heldPids()].sort((a, b) => a - b),
    [11, 12, 13, 14],
  );
  assert.deepEqual([...t.inFlight()].sort(), ['.template-x', 'vm']);
  assert.equal(t.takeWarm('/a'), '.warm-1');
  assert.equal(t.entry('.warm-1'), undefined);
  assert.deepEqual(
    t.warm().map((w) => w.warm),
    ['.warm-2', '.warm-3'],
  );
  assert.equal(t.takeWarm('/c'), undefined);
});
