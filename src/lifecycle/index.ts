/**
 * The MicroVM lifecycle: the contract's states (./states.ts), one writer of
 * state (transition) and the operations that call it. Stored deadlines and
 * their timer are in ./deadlines.ts, the idle policy's activity in
 * ./activity.ts, disk-full pauses in ./disk-pauses.ts, per-VM queues in
 * ./queues.ts, recovery after a daemon restart in ./recovery.ts.
 * Above 400 lines because start, suspend, resume, wake and terminate share the
 * writer and the per-VM helpers; moving them out would need a host interface
 * for each (as ./recovery.ts has) and make the state machine harder to follow.
 *
 * Every state change bumps the VM's generation. A timer or a background job
 * carries the generation it was made for; when it comes back to a VM that has
 * moved on (terminated while starting, resumed while a timer was pending) its
 * write is refused and it does nothing.
 */
import { EventEmitter } from 'node:events';
import { CellaError, hookPort, isCellaError, type RuntimeHook, type VmState } from '../contract/index.js';
import type { DiskCapacity } from '../capacity/index.js';
import type { VmRef } from '../engine/index.js';
import type { LogHub } from '../logs/index.js';
import type { Store, VmPatch, VmRecord } from '../store/index.js';
import { Activity } from './activity.js';
import { DeadlineTimers, onDeadline, suspendedDeadlineFor, type DeadlineHost } from './deadlines.js';
import { DiskPauses } from './disk-pauses.js';
import type { DriverVm, VmDriver, VmExit } from './driver.js';
import { callHook, hookEnabled, hookTimeoutMs } from './hooks.js';
import type { RunnableImage } from './pending.js';
import { VmQueues } from './queues.js';
import { checkpointed, recoverAll, type RecoveryHost } from './recovery.js';
import { REASON_STATES, RUNNING_STATES, canTransition } from './states.js';

export type { DriverVm, VmDriver, VmExit } from './driver.js';
export { admitVm, pendingVm, type RunnableImage } from './pending.js';
export { RUNNING_STATES, TRANSITIONS, canTransition } from './states.js';

/** What the lifecycle needs of the disk watch (src/capacity): work that writes checkpoints is refused when the disk is low. */
export type Capacity = Pick<DiskCapacity, 'require' | 'isLow'>;

export interface LifecycleOptions {
  store: Store;
  driver: VmDriver;
  logs: LogHub;
  images: (name: string, version: string) => Promise<RunnableImage | undefined>;
  capacity?: Capacity;
  log?: (line: string) => void;
  now?: () => number;
}

export class Lifecycle extends EventEmitter {
  private readonly store: Store;
  private readonly driver: VmDriver;
  private readonly logs: LogHub;
  private readonly images: (name: string, version: string) => Promise<RunnableImage | undefined>;
  private readonly capacity: Capacity | undefined;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly diskPaused: DiskPauses;
  private readonly timers: DeadlineTimers;
  private readonly queues: VmQueues;
  private readonly activity: Activity;
  /** Resumes in flight, shared by every caller that needs the VM running. */
  private readonly resuming = new Map<string, Promise<VmRecord>>();
  /** Agents whose guest signals are already wired (a VM resumed in place keeps its agent). */
  private readonly signalled = new WeakSet<object>();
  private readonly onExit = (id: string, info: VmExit): void => {
    if (info.expected) return;
    const why = info.signal ? `killed by ${info.signal}` : info.code != null ? `exited with code ${info.code}` : 'exited';
    void (async () => {
      const rec = await this.store.getVm(id);
      if (!rec || !RUNNING_STATES.has(rec.state)) return;
      await this.terminate(id, `the VM stopped unexpectedly: QEMU ${why}${info.stderr ? `: ${info.stderr.slice(-300)}` : ''}`).catch(() => {});
    })().catch((err: Error) => this.log(`MicroVM ${id}: its exit could not be recorded: ${err.message}`));
  };

  constructor(opts: LifecycleOptions) {
    super();
    this.store = opts.store;
    this.driver = opts.driver;
    this.logs = opts.logs;
    this.images = opts.images;
    this.capacity = opts.capacity;
    this.log = opts.log ?? (() => {});
    this.now = opts.now ?? Date.now;
    const capacity = opts.capacity;
    this.diskPaused = new DiskPauses(this.store, this.driver, () => capacity?.isLow === true, this.log);
    this.timers = new DeadlineTimers(this.now, (id, generation) => onDeadline(this.deadlineHost, id, generation), this.log);
    this.queues = new VmQueues(this.log);
    this.activity = new Activity(this.now);
    this.driver.on('vm-exit', this.onExit);
    this.driver.on('vm-io-error', this.diskPaused.onIoError);
  }

  /** Continues the VMs a full disk paused (./disk-pauses.ts), if the disk has room again. */
  continueDiskPaused(): Promise<void> {
    return this.diskPaused.continueAll();
  }

  // ---------- the one writer of state ----------

  /**
   * Moves `rec` to `to` if the table allows it and nobody moved it since
   * `rec` was read. Accounts usage for the state being left and re-arms the
   * VM's timer. `reason` is stored only where the state keeps one
   * (REASON_STATES), else logged: every other state starts without one.
   * Returns the new record, or undefined if the VM had moved on.
   */
  private async transition(rec: VmRecord, to: VmState, reason: string | null, patch: VmPatch = {}): Promise<VmRecord | undefined> {
    if (!canTransition(rec.state, to)) {
      throw new CellaError('INVALID_STATE', `MicroVM ${rec.id} is ${rec.state}; it cannot become ${to}`, {
        details: { resourceId: rec.id, resourceType: 'Microvm' },
      });
    }
    const now = this.now();
    const usage: VmPatch = { stateSince: now };
    if (RUNNING_STATES.has(rec.state)) usage.runningMs = rec.runningMs + (now - rec.stateSince);
    if (rec.state === 'SUSPENDED') usage.storageByteMs = rec.storageByteMs + rec.checkpointBytes * (now - rec.stateSince);
    const kept = REASON_STATES.has(to) ? reason : null;
    // The row as this write left it: a read after it could already see a later write.
    const next = await this.store.writeState(rec.id, rec.generation, to, rec.generation + 1, kept, { ...usage, ...patch });
    if (!next) return undefined;
    if (reason !== null && kept === null) this.log(`MicroVM ${rec.id}: ${to}: ${reason}`);
    if (to !== 'RUNNING') this.diskPaused.forget(rec.id);
    this.arm(next);
    this.emit('state', next);
    return next;
  }

  // ---------- operations ----------

  /** Records a new PENDING VM (already inserted by the caller) and starts it in the background. */
  start(rec: VmRecord, runHookPayload: string | undefined): void {
    this.arm(rec);
    this.emit('state', rec);
    void this.queues.enqueue(rec.id, () => this.doStart(rec, runHookPayload));
  }

  private async doStart(rec: VmRecord, runHookPayload: string | undefined): Promise<void> {
    // Terminated before this job ran (its terminate may have run already): launching it now would leave a QEMU nobody ends.
    if ((await this.store.getVm(rec.id))?.generation !== rec.generation) return;
    const image = await this.imageOf(rec);
    let vm: DriverVm;
    try {
      vm = await this.driver.launch(image.dir, rec.id, {
        appLog: null,
        onSpawn: this.recordPid(rec),
        ...(rec.spec.network ? { network: rec.spec.network } : {}),
      });
    } catch (err) {
      await this.fail(rec.id, rec.generation, `the VM could not start: ${(err as Error).message}`);
      return;
    }
    this.attach(rec, vm);
    if (!(await this.store.patchVm(rec.id, rec.generation, { slot: vm.ref.slot, pid: vm.pid, pidStartTime: vm.pidStartTime }))) return;
    if (hookEnabled(image.config, 'run')) {
      const failed = await this.hook(vm, image, 'run', { microvmId: rec.id, runHookPayload: runHookPayload ?? '' });
      if (failed) return void (await this.fail(rec.id, rec.generation, failed));
    }
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) return;
    this.activity.touch(rec.id);
    await this.transition(cur, 'RUNNING', null, { idleDeadline: this.activity.idleDeadline(cur) });
  }

  /** SuspendMicrovm: RUNNING → SUSPENDING now, the checkpoint in the background. */
  async suspend(id: string, reason: string | null = null): Promise<VmRecord> {
    for (;;) {
      const next = await this.suspendFrom(await this.require(id), reason);
      if (next) return next;
      // It moved on between the read and the write: read it again.
    }
  }

  /** Suspends `rec` if it is still at its generation; undefined if it moved on. */
  private async suspendFrom(rec: VmRecord, reason: string | null): Promise<VmRecord | undefined> {
    if (rec.state !== 'RUNNING') throw this.conflict(rec, 'suspended');
    // A checkpoint takes disk space: better refused now than failed halfway.
    this.capacity?.require(`suspending MicroVM ${rec.id}`);
    const next = await this.transition(rec, 'SUSPENDING', reason, { idleDeadline: null });
    if (next) void this.queues.enqueue(rec.id, () => this.doSuspend(next));
    return next;
  }

  private async doSuspend(rec: VmRecord): Promise<void> {
    const image = await this.imageOf(rec);
    const vm = this.driver.get(rec.id);
    if (!vm) return void (await this.fail(rec.id, rec.generation, 'the VM was gone when it was to be suspended'));
    if (hookEnabled(image.config, 'suspend')) {
      const failed = await this.hook(vm, image, 'suspend');
      if (failed) {
        const cur = await this.store.getVm(rec.id);
        if (cur?.generation !== rec.generation) return;
        this.activity.touch(rec.id);
        await this.transition(cur, 'RUNNING', `not suspended: ${failed}`, { idleDeadline: this.activity.idleDeadline(cur) });
        return;
      }
    }
    if (rec.spec.idlePolicy?.suspendedDurationSeconds === 0) {
      const cur = await this.store.getVm(rec.id);
      if (cur?.generation !== rec.generation) return;
      const t = await this.transition(cur, 'TERMINATING', 'terminated at suspend: suspendedDurationSeconds is 0');
      if (t) await this.doTerminate(t);
      return;
    }
    let bytes: number;
    try {
      bytes = (await this.driver.suspend(vm)).bytes;
    } catch (err) {
      if (isCellaError(err) && err.details.stillRunning === true) {
        // Not suspended (its disk is full, say), but nothing was lost: it runs on and says why.
        const cur = await this.store.getVm(rec.id);
        if (cur?.generation !== rec.generation) return;
        this.activity.touch(rec.id);
        await this.transition(cur, 'RUNNING', `not suspended: ${err.message}`, { idleDeadline: this.activity.idleDeadline(cur) });
        return;
      }
      return void (await this.fail(rec.id, rec.generation, `suspend failed: ${(err as Error).message}`));
    }
    this.logs.end(rec.id);
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) return;
    // pid stays: a parked QEMU (engine parkSeconds) must still be found, and ended, after a restart.
    await this.transition(cur, 'SUSPENDED', null, { ...checkpointed(this.driver, cur, bytes), suspendedDeadline: suspendedDeadlineFor(cur, this.now()) });
  }

  /**
   * Brings a SUSPENDED VM back (its resume hook included) and resolves once it
   * is RUNNING. Concurrent callers share one resume. The state stays SUSPENDED
   * until the VM runs, as in the contract.
   */
  resume(id: string): Promise<VmRecord> {
    const inflight = this.resuming.get(id);
    if (inflight) return inflight;
    // Shared from the first read on: a caller that comes while it is under way joins it, never starts a second.
    const p = this.startResume(id).finally(() => this.resuming.delete(id));
    this.resuming.set(id, p);
    return p;
  }

  private async startResume(id: string): Promise<VmRecord> {
    const rec = await this.require(id);
    if (rec.state !== 'SUSPENDED') throw this.conflict(rec, 'resumed');
    this.capacity?.require(`resuming MicroVM ${id}`);
    return this.queues.enqueue(id, () => this.doResume(rec));
  }

  private async doResume(rec: VmRecord): Promise<VmRecord> {
    const image = await this.imageOf(rec);
    const cur0 = await this.store.getVm(rec.id);
    if (cur0?.generation !== rec.generation) throw this.conflict(cur0 ?? rec, 'resumed');
    let vm: DriverVm;
    try {
      vm = await this.driver.resume(await this.ref(rec), { appLog: null, onSpawn: this.recordPid(rec) });
    } catch (err) {
      const reason = `resume failed: ${(err as Error).message}`;
      await this.store.patchVm(rec.id, rec.generation, { stateReason: reason });
      throw new CellaError(isCellaError(err, 'INSUFFICIENT_CAPACITY') ? 'INSUFFICIENT_CAPACITY' : 'INTERNAL', reason, { cause: err });
    }
    this.attach(rec, vm);
    await this.store.patchVm(rec.id, rec.generation, { pid: vm.pid, pidStartTime: vm.pidStartTime, bytesRead: rec.bytesRead + rec.checkpointBytes });
    if (hookEnabled(image.config, 'resume')) {
      const failed = await this.hook(vm, image, 'resume');
      if (failed) {
        // The VM goes back to sleep with what it had; a later resume may succeed.
        const back = await this.driver.suspend(vm).catch((err: Error) => err);
        this.logs.end(rec.id);
        if (back instanceof Error) {
          await this.fail(rec.id, rec.generation, `${failed}, and suspending it again failed: ${back.message}`);
        } else {
          // Asleep with all it had: healthy, so no stateReason; the caller gets the error, the log the reason.
          this.log(`MicroVM ${rec.id}: not resumed: ${failed}`);
          await this.store.patchVm(rec.id, rec.generation, checkpointed(this.driver, rec, back.bytes));
        }
        throw new CellaError('HOOK_FAILED', `MicroVM ${rec.id} was not resumed: ${failed}`, { details: { resourceId: rec.id, resourceType: 'Microvm' } });
      }
    }
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) throw this.conflict(cur ?? rec, 'resumed');
    this.activity.touch(rec.id);
    const next = await this.transition(cur, 'RUNNING', null, { suspendedDeadline: null, checkpointBytes: 0, idleDeadline: this.activity.idleDeadline(cur) });
    if (!next) throw this.conflict(cur, 'resumed');
    return next;
  }

  /**
   * For endpoint traffic: resolves once the VM runs, resuming it if it is
   * suspended and its policy allows auto-resume (concurrent callers share one
   * resume). A VM that is starting or suspending is waited for.
   */
  async wake(id: string, timeoutMs = 60_000): Promise<VmRecord> {
    const deadline = this.now() + timeoutMs;
    for (;;) {
      const rec = await this.require(id);
      switch (rec.state) {
        case 'RUNNING':
          if (this.diskPaused.has(id)) {
            throw new CellaError('INSUFFICIENT_CAPACITY', `MicroVM ${id} is paused: the host's disk is full; it continues once there is space again`, {
              details: { resourceId: id, resourceType: 'Microvm', retryAfterSeconds: 30 },
            });
          }
          return rec;
        case 'SUSPENDED':
          if (!rec.spec.idlePolicy?.autoResumeEnabled) {
            throw new CellaError('INVALID_STATE', `MicroVM ${id} is SUSPENDED and its idle policy does not allow auto-resume; resume it with ResumeMicrovm`, {
              details: { resourceId: id, resourceType: 'Microvm' },
            });
          }
          return this.resume(id);
        case 'PENDING':
        case 'SUSPENDING':
          await this.stateChange(id, rec.generation, deadline);
          break;
        case 'TERMINATING':
        case 'TERMINATED':
          throw this.conflict(rec, 'reached');
      }
    }
  }

  /** Resolves when the VM's generation moves past `generation`, or rejects at `deadline`. */
  private stateChange(id: string, generation: number, deadline: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onState = (r: VmRecord): void => {
        if (r.id !== id || r.generation <= generation) return;
        clearTimeout(timer);
        this.removeListener('state', onState);
        resolve();
      };
      const timer = setTimeout(
        () => {
          this.removeListener('state', onState);
          reject(new CellaError('INVALID_STATE', `MicroVM ${id} did not leave its state in time`, { details: { resourceId: id, resourceType: 'Microvm' } }));
        },
        Math.max(0, deadline - this.now()),
      );
      this.on('state', onState);
      // It may have moved on before the listener was in place (a failed read leaves it to the timer).
      void this.store.getVm(id).then(
        (now) => now && onState(now),
        () => {},
      );
    });
  }

  /** TerminateMicrovm: idempotent; TERMINATING now, resources released in the background. */
  async terminate(id: string, reason: string | null = null): Promise<VmRecord> {
    const rec = await this.require(id);
    if (rec.state === 'TERMINATED' || rec.state === 'TERMINATING') return rec;
    const next = await this.transition(rec, 'TERMINATING', reason, { idleDeadline: null, suspendedDeadline: null });
    if (!next) return this.terminate(id, reason);
    void this.queues.enqueue(id, () => this.doTerminate(next));
    return next;
  }

  private async doTerminate(rec: VmRecord): Promise<void> {
    const vm = this.driver.get(rec.id);
    const image = await this.images(rec.imageName, rec.imageVersion);
    if (vm && image && hookEnabled(image.config, 'terminate')) {
      const failed = await this.hook(vm, image, 'terminate');
      if (failed) this.log(`MicroVM ${rec.id}: ${failed}; terminating anyway`);
      await this.logs.settle(rec.id);
    }
    // What runs is released by its own reference (its slot may not be stored if it was terminated while
    // starting); a VM that never got a slot has nothing on the host (its launch failed and cleaned up).
    const placed = (await this.store.getVm(rec.id)) ?? rec;
    const ref = vm?.ref ?? (placed.slot !== null ? await this.ref(placed) : undefined);
    try {
      if (ref) await this.driver.terminate(ref);
    } catch (err) {
      this.log(`MicroVM ${rec.id}: releasing its resources failed: ${(err as Error).message}`);
    }
    this.logs.end(rec.id);
    await this.store.deleteTokensOf(rec.id);
    this.activity.forget(rec.id);
    const cur = await this.store.getVm(rec.id);
    if (cur?.state !== 'TERMINATING') return;
    await this.transition(cur, 'TERMINATED', cur.stateReason, { terminatedAt: this.now(), pid: null, pidStartTime: null, checkpointBytes: 0 });
  }

  /** A failure on the way: the VM goes, with the reason, unless it moved on meanwhile. */
  private async fail(id: string, generation: number, reason: string): Promise<void> {
    const cur = await this.store.getVm(id);
    if (!cur || cur.generation !== generation) return;
    this.log(`MicroVM ${id}: ${reason}`);
    const next = await this.transition(cur, 'TERMINATING', reason, { idleDeadline: null, suspendedDeadline: null });
    if (next) await this.doTerminate(next);
  }

  // ---------- activity ----------

  /** Endpoint traffic: postpones the idle deadline (in memory; the timer writes it when it fires). */
  touch(id: string): void {
    this.activity.touch(id);
  }

  /** An open stream counts as activity for as long as it is open; call the result when it closes. */
  holdActive(id: string): () => void {
    return this.activity.holdActive(id);
  }

  // ---------- timers ----------

  private arm(rec: VmRecord): void {
    this.timers.arm(rec);
  }

  /** What the deadline policy (./deadlines.ts) acts through when a timer fires. */
  private get deadlineHost(): DeadlineHost {
    return {
      store: this.store,
      log: this.log,
      now: this.now,
      closed: () => this.timers.isClosed,
      activity: this.activity,
      arm: (rec) => this.arm(rec),
      suspend: (rec, reason) => this.suspendFrom(rec, reason),
      terminate: (id, reason) => this.terminate(id, reason),
    };
  }

  /**
   * Moves a VM's timeout (spec.timeout: E2B's setTimeout and connect) to
   * `at`, stored before it is armed so a restart keeps it; `extendOnly`
   * never brings it closer. Refused once the VM is terminating.
   */
  async setDeadline(id: string, at: number, opts: { extendOnly?: boolean } = {}): Promise<VmRecord> {
    for (;;) {
      const rec = await this.require(id);
      if (!rec.spec.timeout)
        throw new CellaError('INVALID_STATE', `MicroVM ${id} has a fixed maximum duration`, { details: { resourceId: id, resourceType: 'Microvm' } });
      if (rec.state === 'TERMINATING' || rec.state === 'TERMINATED') throw this.conflict(rec, 'given a new timeout');
      const maxDeadline = opts.extendOnly ? Math.max(rec.maxDeadline, at) : at;
      const next = await this.store.patchVm(id, rec.generation, { maxDeadline });
      if (!next) continue;
      this.arm(next);
      return next;
    }
  }

  // ---------- restart ----------

  /**
   * After a daemon restart: makes every live VM's state true again (./recovery.ts).
   * Returns the VMs that keep host resources (for the engine's reclaim).
   */
  recover(opts: { reapplyNetwork?: boolean } = {}): Promise<VmRef[]> {
    const host: RecoveryHost = {
      store: this.store,
      driver: this.driver,
      log: this.log,
      transition: (rec, to, reason, patch) => this.transition(rec, to, reason, patch),
      finishTerminate: (rec) => this.doTerminate(rec),
      ref: (rec) => this.ref(rec),
      attach: (rec, vm) => this.attach(rec, vm),
      arm: (rec) => this.arm(rec),
      activeNow: (rec) => {
        this.activity.touch(rec.id);
        return this.activity.idleDeadline(rec);
      },
      suspendedDeadlineFor: (rec) => suspendedDeadlineFor(rec, this.now()),
    };
    return recoverAll(host, opts);
  }

  /** Stops timers; VMs keep running (a restarted daemon re-adopts them). */
  close(): void {
    this.timers.close();
    this.driver.removeListener('vm-exit', this.onExit);
    this.driver.removeListener('vm-io-error', this.diskPaused.onIoError);
  }

  /** Waits for the background work queued so far. */
  settle(): Promise<void> {
    return this.queues.settle();
  }

  // ---------- helpers ----------

  /**
   * Records a VM's new QEMU in the store the moment it exists, before it is
   * loaded: a cellad that dies halfway through a launch or resume leaves a
   * QEMU the next start finds by this pid, and adopts or kills (ADR 0007).
   */
  private recordPid(rec: VmRecord): (pid: number, startTime: string) => void {
    return (pid, pidStartTime) =>
      void this.store
        .patchVm(rec.id, rec.generation, { pid, pidStartTime })
        .catch((err: Error) => this.log(`MicroVM ${rec.id}: its pid could not be recorded: ${err.message}`));
  }

  private attach(rec: VmRecord, vm: DriverVm): void {
    if (!rec.spec.loggingDisabled) this.logs.attach(rec.id, vm.appLog);
    // Beyond AWS: the guest may say it is busy, or ask to be suspended (docs/design.md, "Guest → host signals").
    if (this.signalled.has(vm.agent)) return;
    this.signalled.add(vm.agent);
    vm.agent.on('activity', () => this.touch(rec.id));
    vm.agent.on('suspend-request', () => {
      void (async () => {
        const cur = await this.store.getVm(rec.id);
        if (cur?.state === 'RUNNING') await this.suspendFrom(cur, 'suspended at the request of the guest');
      })().catch((err: Error) => this.log(`MicroVM ${rec.id}: the guest's suspend request was refused: ${err.message}`));
    });
  }

  private async hook(vm: DriverVm, image: RunnableImage, hook: RuntimeHook, body?: unknown): Promise<string | undefined> {
    const port = hookPort(image.config.hooks) ?? image.config.port;
    return callHook(vm.address(port), hook, hookTimeoutMs(image.config, hook), body);
  }

  /** The engine's handle of a VM; its image folder is empty when the image is gone (enough to terminate it, not to resume it). */
  private async ref(rec: VmRecord): Promise<VmRef> {
    return { id: rec.id, imageDir: (await this.images(rec.imageName, rec.imageVersion))?.dir ?? '', slot: rec.slot ?? -1 };
  }

  private async imageOf(rec: VmRecord): Promise<RunnableImage> {
    const image = await this.images(rec.imageName, rec.imageVersion);
    if (!image) throw new CellaError('NOT_FOUND', `image ${rec.imageName} of MicroVM ${rec.id} no longer exists`);
    return image;
  }

  async require(id: string): Promise<VmRecord> {
    const rec = await this.store.getVm(id);
    if (!rec) throw new CellaError('NOT_FOUND', `MicroVM ${id} not found`, { details: { resourceId: id, resourceType: 'Microvm' } });
    return rec;
  }

  private conflict(rec: VmRecord, verb: string): CellaError {
    return new CellaError('INVALID_STATE', `MicroVM ${rec.id} is ${rec.state} and cannot be ${verb}`, {
      details: { resourceId: rec.id, resourceType: 'Microvm' },
    });
  }
}
