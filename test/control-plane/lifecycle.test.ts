/**
 * The lifecycle over HTTP, on the control-plane harness (no VM): suspend and
 * resume, the idle policy, deadlines, what the host reports (a crash, a full
 * disk, a guest that asks to sleep), and recovery after a cellad restart.
 * Durations are the contract's smallest (1 s); waits are bounds, not
 * assertions about time.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { V, startHarness, type Harness } from '../fixtures/harness.js';
import type { MicrovmBody } from '../fixtures/api.js';

const run = async (h: Harness, body: Record<string, unknown> = {}): Promise<string> => {
  const r = await h.api<MicrovmBody>('POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
  assert.equal(r.status, 200, r.text);
  return r.body.microvmId;
};
/**
 * Runs a VM and waits until the lifecycle has made it RUNNING. Listens for the transition rather than
 * polling: a VM with a 1 s idle policy or maximum duration may have moved on before a poll on a loaded
 * box sees it RUNNING.
 */
const running = async (h: Harness, body: Record<string, unknown> = {}): Promise<string> => {
  const ran = new Set<string>();
  const onState = (r: { id: string; state: string }): void => {
    if (r.state === 'RUNNING') ran.add(r.id);
  };
  h.lifecycle.on('state', onState);
  try {
    const id = await run(h, body);
    const end = Date.now() + 10_000;
    while (!ran.has(id)) {
      if (Date.now() > end) throw new Error(`MicroVM ${id} never became RUNNING`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return id;
  } finally {
    h.lifecycle.removeListener('state', onState);
  }
};

/** Runs `fn` on a new harness and closes it (and any harness a restart made) whatever happens. */
async function withHarness(fn: (h: Harness, restart: () => Promise<Harness>) => Promise<void>): Promise<void> {
  let h = await startHarness();
  try {
    await fn(h, async () => (h = await h.restart()));
  } finally {
    await h.close();
  }
}

// Each test has a harness of its own: they run at once, so their waits for 1 s deadlines overlap.
describe('the lifecycle over HTTP (no VM)', { concurrency: true }, () => {
  test('suspend and resume: SUSPENDING then SUSPENDED with a checkpoint, RUNNING again from it; conflicts change nothing', { timeout: 30_000 }, () =>
    withHarness(async (h) => {
      const id = await running(h);
      assert.equal((await h.api('POST', `${V}/microvms/${id}/suspend`)).status, 200);
      await h.waitState(id, ['SUSPENDED']);
      assert.ok(h.driver.checkpointSize(id), 'the checkpoint is on disk');
      assert.equal(h.driver.get(id), undefined, 'no QEMU while suspended');
      const again = await h.api('POST', `${V}/microvms/${id}/suspend`);
      assert.equal(again.status, 409);
      assert.equal(again.type, 'ConflictException');
      assert.equal((await h.api('POST', `${V}/microvms/${id}/resume`)).status, 200);
      assert.equal((await h.api<MicrovmBody>('GET', `${V}/microvms/${id}`)).body.state, 'RUNNING', 'ResumeMicrovm answers once it runs');
      assert.ok(h.driver.get(id));
      const usage = await h.api<{ snapshotBytesWritten: number; snapshotBytesRead: number }>('GET', `/cella/v1/microvms/${id}/usage`);
      assert.equal(usage.status, 200);
      assert.equal(usage.body.snapshotBytesWritten, h.driver.checkpointBytes);
      assert.equal(usage.body.snapshotBytesRead, h.driver.checkpointBytes);
    }),
  );

  test('a resume that fails leaves the VM SUSPENDED with the reason; a suspend that fails ends it with the reason', { timeout: 30_000 }, () =>
    withHarness(async (h) => {
      const id = await running(h);
      assert.equal((await h.api('POST', `${V}/microvms/${id}/suspend`)).status, 200);
      await h.waitState(id, ['SUSPENDED']);
      h.driver.failNext('resume', new Error('no room for the restore'));
      const failed = await h.api('POST', `${V}/microvms/${id}/resume`);
      assert.equal(failed.status, 500);
      assert.equal(failed.body.code, 'INTERNAL');
      const still = await h.waitState(id, ['SUSPENDED']);
      assert.match(still.stateReason ?? '', /resume failed: no room for the restore/);
      assert.equal((await h.api('POST', `${V}/microvms/${id}/resume`)).status, 200, 'a later resume may succeed');

      h.driver.failNext('suspend', new Error('the disk broke'));
      assert.equal((await h.api('POST', `${V}/microvms/${id}/suspend`)).status, 200);
      const ended = await h.waitState(id, ['TERMINATED']);
      assert.match(ended.stateReason ?? '', /suspend failed: the disk broke/);
      assert.equal(existsSync(h.driver.vmDir(id)), false, 'its folder is gone');
    }),
  );

  test('idle: a VM with no activity is suspended, and auto-resumed when its endpoint is reached', { timeout: 30_000 }, () =>
    withHarness(async (h) => {
      const id = await running(h, { idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
      await h.waitState(id, ['SUSPENDED']);
      // What the endpoint proxy does with a request for a suspended VM.
      assert.equal((await h.lifecycle.wake(id)).state, 'RUNNING');
      assert.equal((await h.api<MicrovmBody>('GET', `${V}/microvms/${id}`)).body.state, 'RUNNING');
      await h.waitState(id, ['SUSPENDED']);

      const manual = await running(h, { idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: false } });
      await h.waitState(manual, ['SUSPENDED']);
      await assert.rejects(h.lifecycle.wake(manual), (e: Error & { code?: string }) => e.code === 'INVALID_STATE');
    }),
  );

  test('maximumDurationInSeconds ends the VM with a reason', { timeout: 30_000 }, () =>
    withHarness(async (h) => {
      const id = await running(h, { maximumDurationInSeconds: 1 });
      const done = await h.waitState(id, ['TERMINATED']);
      assert.match(done.stateReason ?? '', /maximum duration of 1 s reached/);
      assert.ok(done.terminatedAt);
    }),
  );

  test('suspendedDurationSeconds ends a suspended VM; 0 terminates it at suspend', { timeout: 30_000 }, () =>
    withHarness(async (h) => {
      const ttl = await running(h, { idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 1, autoResumeEnabled: false } });
      await h.waitState(ttl, ['SUSPENDED']);
      const done = await h.waitState(ttl, ['TERMINATED']);
      assert.match(done.stateReason ?? '', /suspended for longer than suspendedDurationSeconds \(1 s\)/);
      assert.equal(existsSync(h.driver.vmDir(ttl)), false, 'its checkpoint is gone');

      const seen = new Set<string>();
      h.lifecycle.on('state', (r: { state: string }) => seen.add(r.state));
      const zero = await running(h, { idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 0, autoResumeEnabled: true } });
      const end = await h.waitState(zero, ['TERMINATED', 'SUSPENDED']);
      assert.equal(end.state, 'TERMINATED');
      assert.equal(seen.has('SUSPENDED'), false);
      assert.match(end.stateReason ?? '', /suspendedDurationSeconds is 0/);
    }),
  );

  test('what the host reports: a crash ends the VM, a full disk pauses it until there is room, a guest may ask to be suspended', { timeout: 30_000 }, () =>
    withHarness(async (h) => {
      const crashed = await running(h);
      h.driver.crash(crashed, { code: null, signal: 'SIGSEGV' });
      const gone = await h.waitState(crashed, ['TERMINATED']);
      assert.match(gone.stateReason ?? '', /stopped unexpectedly: QEMU killed by SIGSEGV/);

      const full = await running(h);
      h.driver.diskFull(full);
      const paused = async (): Promise<string | undefined> => (await h.api<MicrovmBody>('GET', `${V}/microvms/${full}`)).body.stateReason;
      while (!(await paused())) await new Promise((r) => setTimeout(r, 20));
      assert.match((await paused()) ?? '', /host's disk is full/);
      await assert.rejects(h.lifecycle.wake(full), (e: Error & { code?: string }) => e.code === 'INSUFFICIENT_CAPACITY');
      await h.lifecycle.continueDiskPaused();
      assert.equal(await paused(), undefined, 'the reason is cleared once it runs again');
      assert.equal(h.driver.get(full)?.paused, false);
      assert.equal((await h.lifecycle.wake(full)).state, 'RUNNING');

      const sleepy = await running(h);
      h.driver.get(sleepy)?.agent.emit('suspend-request');
      const asleep = await h.waitState(sleepy, ['SUSPENDED']);
      assert.equal(asleep.stateReason, undefined, 'a suspend the guest asked for is healthy: no reason');
    }),
  );

  test('restart: a running VM is re-adopted (the same QEMU), and its maximum duration still ends it', { timeout: 30_000 }, () =>
    withHarness(async (h0, restart) => {
      const id = await running(h0, { maximumDurationInSeconds: 5 });
      const pid = h0.driver.get(id)?.pid;
      const h = await restart();
      assert.deepEqual(h.driver.adopted, [id]);
      assert.equal(h.driver.get(id)?.pid, pid, 'the same pretend QEMU');
      assert.equal((await h.api<MicrovmBody>('GET', `${V}/microvms/${id}`)).body.state, 'RUNNING');
      const done = await h.waitState(id, ['TERMINATED']);
      assert.match(done.stateReason ?? '', /maximum duration of 5 s reached/);
      assert.equal(h.driver.hasProcess(id), false, 'its QEMU was ended');
    }),
  );

  test('restart: every live VM is made true again: adopted, kept suspended, finished, or ended with a reason', { timeout: 30_000 }, () =>
    withHarness(async (h0, restart) => {
      const adopted = await running(h0);
      const suspended = await running(h0);
      assert.equal((await h0.api('POST', `${V}/microvms/${suspended}/suspend`)).status, 200);
      await h0.waitState(suspended, ['SUSPENDED']);
      const lost = await running(h0);
      // Cut short by the restart: a suspend before its checkpoint, and a launch before its QEMU.
      const suspending = await running(h0);
      h0.driver.hold('suspend');
      assert.equal((await h0.api('POST', `${V}/microvms/${suspending}/suspend`)).status, 200);
      h0.driver.hold('launch');
      const starting = await run(h0);
      while (h0.driver.waiting('suspend') + h0.driver.waiting('launch') < 2) await new Promise((r) => setTimeout(r, 10));

      // One QEMU goes without a word (no exit event): the next cellad finds it gone.
      h0.driver.killProcess(lost);
      const h = await restart();
      assert.equal((await h.waitState(adopted, ['RUNNING'])).stateReason, undefined);
      assert.ok(h.driver.get(adopted));
      assert.equal((await h.api<MicrovmBody>('GET', `${V}/microvms/${suspended}`)).body.state, 'SUSPENDED');
      assert.equal((await h.api('POST', `${V}/microvms/${suspended}/resume`)).status, 200, 'a suspended VM resumes from its checkpoint');
      assert.equal((await h.waitState(suspending, ['RUNNING'])).stateReason, undefined, 'an interrupted suspend runs on, healthy');
      assert.match((await h.waitState(starting, ['TERMINATED'])).stateReason ?? '', /cellad restarted before the VM finished starting/);
      assert.match((await h.waitState(lost, ['TERMINATED'])).stateReason ?? '', /its QEMU process is gone/);
      for (const id of [adopted, suspending]) assert.ok(h.driver.adopted.includes(id), id);
      // The interrupted suspend had stopped its guest: it runs again, with the clock set as after any restore.
      assert.equal(h.driver.get(suspending)?.paused, false);
      assert.equal(h.driver.get(suspending)?.agent.clockSets, 1);
      assert.equal(h.driver.get(adopted)?.agent.clockSets, 0, 'a VM that ran on needs no new clock');
    }),
  );
});
