import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { RunningVm, VmRef } from '../engine/index.js';
import { isCellaError } from '../contract/index.js';
import { LogHub } from '../logs/index.js';
import { SqliteStore, type VmRecord } from '../store/index.js';
import { Lifecycle, TRANSITIONS, pendingVm, type RunnableImage, type VmDriver } from './index.js';


/** A driver whose launches finish when the test says so; the real engine is covered by test/control.test.ts. */
class FakeDriver extends EventEmitter {
  readonly running = new Map<string, RunningVm>();
  readonly terminated: string[] = [];
  release: (() => void) | undefined;
  failLaunch = false;
  launches = 0;
  resumes = 0;

  async launch(_image: string, id: string): Promise<RunningVm> {
    this.launches++;
    await new Promise<void>((resolve) => (this.release = resolve));
    if (this.failLaunch) throw new Error('no room');
    return this.run(id);
  }
  async resume(ref: VmRef): Promise<RunningVm> {
    this.resumes++;
    return this.run(ref.id);
  }
  private run(id: string): RunningVm {
    const vm = { ref: { id, imageDir: '/img', slot: 1 }, pid: 1, pidStartTime: '1', appLog: new EventEmitter(), agent: new EventEmitter(), address: () => ({ host: '127.0.0.1', port: 1 }) };
    this.running.set(id, vm as unknown as RunningVm);
    return vm as unknown as RunningVm;
  }
  async terminate(ref: VmRef): Promise<void> {
    this.running.delete(ref.id);
    this.terminated.push(ref.id);
  }
  get(id: string): RunningVm | undefined {
    return this.running.get(id);
  }
  vmDir(id: string): string {
    return `/nonexistent/${id}`;
  }
}

function setup(): { lc: Lifecycle; store: SqliteStore; driver: FakeDriver; done: () => Promise<void> } {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-lc-'));
  const store = new SqliteStore(':memory:');
  const driver = new FakeDriver();
  const image: RunnableImage = {
    name: 'img',
    arn: 'arn:x',
    version: '1.0',
    dir: '/img',
    config: { command: ['/a'], environmentVariables: {}, workingDirectory: '/', port: 8080, memoryMiB: 256, vcpus: 1 },
  };
  const lc = new Lifecycle({ store, driver: driver as unknown as VmDriver, logs: new LogHub(dir), images: async () => image });
  return {
    lc,
    store,
    driver,
    done: async () => {
      lc.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function pending(id: string): VmRecord {
  return pendingVm({
    id,
    image: { name: 'img', arn: 'arn:x', version: '1.0', config: { memoryMiB: 256, vcpus: 1 } },
    spec: { maximumDurationInSeconds: 600, ingressNetworkConnectors: [], egressNetworkConnectors: [], loggingDisabled: true },
    now: Date.now(),
  });
}

test('a VM terminated while it starts never becomes RUNNING: the late launch is refused by its generation', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    const rec = pending('vm-1');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await new Promise((r) => setImmediate(r));
    const t = await lc.terminate('vm-1', 'asked');
    assert.equal(t.state, 'TERMINATING');
    assert.equal(t.generation, 2);
    driver.release?.();
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
    const rec = pending('vm-2');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await assert.rejects(lc.suspend('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    await assert.rejects(lc.resume('vm-2'), (e) => isCellaError(e, 'INVALID_STATE'));
    assert.equal((await store.getVm('vm-2'))?.generation, 1);
    driver.release?.();
    await lc.settle();
    assert.equal((await store.getVm('vm-2'))?.state, 'RUNNING');
    assert.deepEqual(TRANSITIONS.TERMINATED, []);
    await lc.terminate('vm-2');
    await lc.settle();
    assert.equal((await lc.terminate('vm-2')).state, 'TERMINATED', 'terminate is idempotent');
  } finally {
    await done();
  }
});

test('a launch that fails ends TERMINATED with the reason, with nothing to release', { timeout: 10_000 }, async () => {
  const { lc, store, driver, done } = setup();
  try {
    driver.failLaunch = true;
    const rec = pending('vm-3');
    await store.insertVm(rec);
    lc.start(rec, undefined);
    await new Promise((r) => setImmediate(r));
    driver.release?.();
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
    await store.insertVm({ ...pending('vm-4'), state: 'SUSPENDED' });
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
