import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { FakeDriver } from '../../test/fixtures/fake-driver.js';
import { type HookSettings, isCellaError } from '../contract/index.js';
import { LogHub } from '../logs/index.js';
import { SqliteStore, type VmRecord } from '../store/index.js';
import { Lifecycle, pendingVm, type RunnableImage } from './index.js';

// The real engine is covered by test/control.test.ts; the API over this lifecycle by test/control-plane/.

function setup(hooks?: HookSettings): { lc: Lifecycle; store: SqliteStore; driver: FakeDriver; logged: string[]; done: () => Promise<void> } {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-lc-'));
  const store = new SqliteStore(':memory:');
  const driver = new FakeDriver(dir);
  const image: RunnableImage = {
    name: 'img',
    arn: 'arn:x',
    version: '1.0',
    dir: '/img',
    config: { command: ['/a'], environmentVariables: {}, workingDirectory: '/', port: 8080, memoryMiB: 256, vcpus: 1, ...(hooks ? { hooks } : {}) },
  };
  const logged: string[] = [];
  const lc = new Lifecycle({ store, driver, logs: new LogHub(dir), images: async () => image, log: (l) => logged.push(l) });
  return {
    lc,
    store,
    driver,
    logged,
    done: async () => {
      lc.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `ok` until it holds (the test's timeout bounds the wait). */
async function waitFor(ok: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await ok())) await new Promise((r) => setTimeout(r, 5));
}

function pending(id: string, more: Partial<VmRecord['spec']> = {}): VmRecord {
  return pendingVm({
    id,
    image: { name: 'img', arn: 'arn:x', version: '1.0', config: { memoryMiB: 256, vcpus: 1 } },
    spec: { maximumDurationInSeconds: 600, ingressNetworkConnectors: [], egressNetworkConnectors: [], loggingDisabled: true, ...more },
    now: Date.now(),
  });
}

test('a VM terminated while it starts never becomes RUNNING: the late launch is refused by its generation', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    driver.hold('launch');
    const rec = pending('vm-1');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await waitFor(() => driver.waiting('launch') === 1);
    const t = await lc.terminate('vm-1', 'asked');
    assert.equal(t.state, 'TERMINATING');
    assert.equal(t.generation, 2);
    driver.release('launch');
    await lc.settle();
    const end = (await store.getVm('vm-1')) as VmRecord;
    assert.equal(end.state, 'TERMINATED');
    assert.equal(end.stateReason, 'asked');
    assert.deepEqual(driver.terminated, ['vm-1']);
    assert.equal(driver.running.size, 0);
  } finally {
    await done();
  }
});

test('operations outside the table are conflicts that change nothing', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    driver.hold('launch');
    const rec = pending('vm-2');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await assert.rejects(lc.suspend('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    await assert.rejects(lc.resume('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    assert.equal((await store.getVm('vm-2'))?.generation, 1);
    driver.release('launch');
    await lc.settle();
    assert.equal((await store.getVm('vm-2'))?.state, 'RUNNING');
    await assert.rejects(lc.resume('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    await lc.terminate('vm-2');
    await lc.settle();
    const end = await lc.terminate('vm-2');
    assert.equal(end.state, 'TERMINATED', 'terminate is idempotent');
    await assert.rejects(lc.suspend('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    await assert.rejects(lc.resume('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    assert.equal((await store.getVm('vm-2'))?.generation, end.generation, 'the refused calls wrote nothing');
  } finally {
    await done();
  }
});

test('a launch that fails ends TERMINATED with the reason, with nothing to release', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    driver.failNext('launch', new Error('no room'));
    const rec = pending('vm-3');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await lc.settle();
    const end = (await store.getVm('vm-3')) as VmRecord;
    assert.equal(end.state, 'TERMINATED');
    assert.match(end.stateReason ?? '', /could not start: no room/);
    assert.deepEqual(driver.terminated, []);
  } finally {
    await done();
  }
});

test('two resumes at once are one: the second caller joins the first from its first read on', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    await store.insertVm({ ...pending('vm-4'), state: 'SUSPENDED', slot: 1 });
    driver.writeCheckpoint('vm-4');
    const [a, b] = await Promise.all([lc.resume('vm-4'), lc.resume('vm-4')]);
    assert.equal(driver.resumes, 1);
    assert.equal(a.state, 'RUNNING');
    assert.deepEqual(b, a);
  } finally {
    await done();
  }
});

test('a VM terminated before its start job ran is never launched (no QEMU left that nobody ends)', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    const rec = pending('vm-5');
    await store.insertVm(rec);
    // As when a TerminateMicrovm lands between RunMicrovm's commit and its call to start.
    await lc.terminate('vm-5', 'asked');
    lc.start(rec, undefined);
    await lc.settle();
    assert.equal(driver.launches, 0);
    assert.equal((await store.getVm('vm-5'))?.state, 'TERMINATED');
  } finally {
    await done();
  }
});

test('a suspend that loses the race to a terminate reports the state it lost to', { timeout: 10_000 }, async () => {
  const { lc, store, done } = setup();
  try {
    await store.insertVm({ ...pending('vm-6'), state: 'RUNNING' });
    // Both read RUNNING; the terminate writes first, so the suspend's write is refused by the generation.
    await Promise.all([
      assert.doesNotReject(lc.terminate('vm-6')),
      assert.rejects(lc.suspend('vm-6'), (e) => isCellaError(e, 'INVALID_STATE') && /is TERMINATING and cannot be suspended/.test(e.message)),
    ]);
    await lc.settle();
    assert.equal((await store.getVm('vm-6'))?.state, 'TERMINATED');
  } finally {
    await done();
  }
});

/** Suspend and resume hooks that fail (nothing answers them); no hooks.port: the contract's 9000. */
const FAILING_HOOKS: HookSettings = { microvmHooks: { suspend: 'ENABLED', resume: 'ENABLED' }, microvmImageHooks: { ready: 'ENABLED' } };

test('a refused suspend leaves a healthy RUNNING VM without a stateReason; the reason is logged', { timeout: 10_000 }, async () => {
  const { lc, store, driver, logged, done } = setup(FAILING_HOOKS);
  try {
    const rec = pending('vm-7');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await lc.settle();
    await lc.suspend('vm-7');
    await lc.settle();
    const after = (await store.getVm('vm-7')) as VmRecord;
    assert.equal(after.state, 'RUNNING');
    assert.equal(after.generation, 4, 'PENDING → RUNNING → SUSPENDING → RUNNING');
    assert.equal(after.stateReason, null);
    assert.ok(
      logged.some((l) => /vm-7: RUNNING: not suspended: the suspend hook could not be reached/.test(l)),
      logged.join('\n'),
    );
    assert.deepEqual(driver.addressed, [9000], 'the hook was called on the default hooks.port');
  } finally {
    await done();
  }
});

test('a failed resume hook is an InternalServerException (500); the VM stays SUSPENDED without a stateReason', { timeout: 10_000 }, async () => {
  const { lc, store, driver, logged, done } = setup(FAILING_HOOKS);
  try {
    await store.insertVm({ ...pending('vm-8'), state: 'SUSPENDED' });
    driver.writeCheckpoint('vm-8');
    await assert.rejects(lc.resume('vm-8'), (e) => isCellaError(e, 'HOOK_FAILED') && e.httpStatus === 500 && e.type === 'InternalServerException');
    const after = (await store.getVm('vm-8')) as VmRecord;
    assert.equal(after.state, 'SUSPENDED');
    assert.equal(after.stateReason, null);
    assert.ok(logged.some((l) => /vm-8: not resumed: the resume hook could not be reached/.test(l)));
  } finally {
    await done();
  }
});

test('a resume that cannot restore keeps its reason until the VM is healthy again', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    await store.insertVm({ ...pending('vm-9'), state: 'SUSPENDED' });
    driver.writeCheckpoint('vm-9');
    driver.failNext('resume', new Error('checkpoint unreadable'));
    await assert.rejects(lc.resume('vm-9'), (e) => isCellaError(e, 'INTERNAL'));
    assert.match((await store.getVm('vm-9'))?.stateReason ?? '', /resume failed: checkpoint unreadable/);
    const running = await lc.resume('vm-9');
    assert.equal(running.state, 'RUNNING');
    assert.equal(running.stateReason, null);
  } finally {
    await done();
  }
});

/** Resolves with the VM's record once it reaches `state` (keeping the process up meanwhile: the lifecycle's timers are unref'd). */
function reached(lc: Lifecycle, id: string, state: VmRecord['state']): Promise<VmRecord> {
  const alive = setInterval(() => {}, 1000);
  return new Promise((resolve) => {
    const on = (r: VmRecord): void => {
      if (r.id !== id || r.state !== state) return;
      lc.removeListener('state', on);
      clearInterval(alive);
      resolve(r);
    };
    lc.on('state', on);
  });
}

async function started(lc: Lifecycle, store: SqliteStore, rec: VmRecord): Promise<void> {
  await store.insertVm(rec);
  lc.start(rec, undefined);
  await lc.settle();
}

test(
  'a timeout that suspends: setDeadline moves it (extendOnly never closer), reaching it suspends, and a resumed VM runs to its new one',
  { timeout: 10_000 },
  async () => {
    const { lc, store, driver, logged, done } = setup();
    try {
      await started(lc, store, pending('vm-10', { timeout: { onExpiry: 'suspend' } }));
      const far = Date.now() + 600_000;
      assert.equal((await lc.setDeadline('vm-10', far)).maxDeadline, far);
      assert.equal((await lc.setDeadline('vm-10', Date.now() + 1000, { extendOnly: true })).maxDeadline, far, 'extendOnly keeps the later one');
      const suspended = reached(lc, 'vm-10', 'SUSPENDED');
      await lc.setDeadline('vm-10', Date.now() + 20);
      await suspended;
      assert.ok(
        logged.some((l) => /vm-10: SUSPENDING: suspended: its timeout was reached/.test(l)),
        logged.join('\n'),
      );
      assert.deepEqual(driver.terminated, [], 'suspended, not terminated');
      // Moved while suspended (as E2B's connect does before it resumes): the past deadline does not apply to a paused VM.
      await lc.setDeadline('vm-10', far, { extendOnly: true });
      const r = await lc.resume('vm-10');
      assert.equal(r.state, 'RUNNING');
      assert.equal(r.maxDeadline, far);
    } finally {
      await done();
    }
  },
);

test('a timeout that terminates ends the VM with its reason; a VM without a timeout refuses setDeadline', { timeout: 10_000 }, async () => {
  const { lc, store, done } = setup();
  try {
    await started(lc, store, pending('vm-11', { timeout: { onExpiry: 'terminate' } }));
    const ended = reached(lc, 'vm-11', 'TERMINATED');
    await lc.setDeadline('vm-11', Date.now() + 20);
    assert.equal((await ended).stateReason, 'its timeout was reached');
    await assert.rejects(lc.setDeadline('vm-11', Date.now() + 1000), (e) => isCellaError(e, 'INVALID_STATE'));
    await started(lc, store, pending('vm-12'));
    await assert.rejects(lc.setDeadline('vm-12', Date.now() + 1000), (e) => isCellaError(e, 'INVALID_STATE'));
    assert.equal((await store.getVm('vm-12'))?.generation, 2, 'nothing written');
  } finally {
    await done();
  }
});
