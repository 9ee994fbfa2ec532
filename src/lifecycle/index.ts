/**
 * The MicroVM lifecycle: the contract's states (./states.ts), one writer of
 * state (transition) and the operations that call it. Stored deadlines and
 * their timer are in ./deadlines.ts, the idle policy's activity in
 * ./activity.ts, disk-full pauses in ./disk-pauses.ts, per-VM queues in
 * ./queues.ts, recovery after a daemon restart in ./recovery.ts, the resume
 * job in ./resume.ts, waking for endpoint traffic in ./wake.ts, and the
 * per-VM reads and wiring (record, image, pid, app log, guest signals, hooks)
 * in ./vms.ts. Those files write state only through transition().
 *
 * Every state change bumps the VM's generation. A timer or a background job
 * carries the generation it was made for; when it comes back to a VM that has
 * moved on (terminated while starting, resumed while a timer was pending) its
 * write is refused and it does nothing.
 */
import { EventEmitter } from 'node:events';
import { CellaError, isCellaError, type VmState } from '../contract/index.js';
import type { DiskCapacity } from '../capacity/index.js';
import type { VmRef } from '../engine/index.js';
import type { LogHub } from '../logs/index.js';
import type { Store, VmPatch, VmRecord } from '../store/index.js';
import { Activity } from './activity.js';
import { DeadlineTimers, onDeadline, suspendedDeadlineFor, type DeadlineHost } from './deadlines.js';
import { DiskPauses } from './disk-pauses.js';
import type { DriverVm, VmDriver, VmExit } from './driver.js';
import { hookEnabled } from './hooks.js';
import type { RunnableImage } from './pending.js';
import { VmQueues } from './queues.js';
import { checkpointed, recoverAll, type RecoveryHost } from './recovery.js';
import { resumeVm, type ResumeHost } from './resume.js';
import { REASON_STATES, RUNNING_STATES, canTransition } from './states.js';
import { conflict, VmAccess } from './vms.js';
import { wake, type WakeHost } from './wake.js';

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
  private readonly vms: VmAccess;
  private readonly capacity: Capacity | undefined;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly diskPaused: DiskPauses;
  private readonly timers: DeadlineTimers;
  private readonly queues: VmQueues;
  private readonly activity: Activity;
  /** What the split-off jobs (./deadlines.ts, ./recovery.ts, ./resume.ts, ./wake.ts) use of the lifecycle. */
  private readonly host: DeadlineHost & RecoveryHost & ResumeHost & WakeHost;
  /** Resumes in flight, shared by every caller that needs the VM running. */
  private readonly resuming = new Map<string, Promise<VmRecord>>();
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
    this.timers = new DeadlineTimers(this.now, (id, generation) => onDeadline(this.host, id, generation), this.log);
    this.queues = new VmQueues(this.log);
    this.activity = new Activity(this.now);
    this.vms = new VmAccess({
      store: this.store,
      logs: this.logs,
      images: this.images,
      log: this.log,
      onActivity: (id) => this.touch(id),
      onSuspendRequest: (id) =>
        void (async () => {
          const cur = await this.store.getVm(id);
          if (cur?.state === 'RUNNING') await this.suspendFrom(cur, 'suspended at the request of the guest');
        })().catch((err: Error) => this.log(`MicroVM ${id}: the guest's suspend request was refused: ${err.message}`)),
    });
    this.host = {
      store: this.store,
      driver: this.driver,
      logs: this.logs,
      log: this.log,
      now: this.now,
      vms: this.vms,
      activity: this.activity,
      events: this,
      transition: (rec, to, reason, patch) => this.transition(rec, to, reason, patch),
      fail: (id, generation, reason) => this.fail(id, generation, reason),
      finishTerminate: (rec) => this.doTerminate(rec),
      suspend: (rec, reason) => this.suspendFrom(rec, reason),
      terminate: (id, reason) => this.terminate(id, reason),
      resume: (id) => this.resume(id),
      diskPaused: (id) => this.diskPaused.has(id),
      closed: () => this.timers.isClosed,
      arm: (rec) => this.timers.arm(rec),
      activeNow: (rec) => {
        this.activity.touch(rec.id);
        return this.activity.idleDeadline(rec);
      },
      suspendedDeadlineFor: (rec) => suspendedDeadlineFor(rec, this.now()),
    };
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
    this.timers.arm(next);
    this.emit('state', next);
    return next;
  }

  // ---------- operations ----------

  /** Records a new PENDING VM (already inserted by the caller) and starts it in the background. */
  start(rec: VmRecord, runHookPayload: string | undefined): void {
    this.timers.arm(rec);
    this.emit('state', rec);
    void this.queues.enqueue(rec.id, () => this.doStart(rec, runHookPayload));
  }

  private async doStart(rec: VmRecord, runHookPayload: string | undefined): Promise<void> {
    // Terminated before this job ran (its terminate may have run already): launching it now would leave a QEMU nobody ends.
    if ((await this.store.getVm(rec.id))?.generation !== rec.generation) return;
    const image = await this.vms.imageOf(rec);
    let vm: DriverVm;
    try {
      vm = await this.driver.launch(image.dir, rec.id, {
        appLog: null,
        onSpawn: this.vms.recordPid(rec),
        ...(rec.spec.network ? { network: rec.spec.network } : {}),
      });
    } catch (err) {
      await this.fail(rec.id, rec.generation, `the VM could not start: ${(err as Error).message}`);
      return;
    }
    this.vms.attach(rec, vm);
    if (!(await this.store.patchVm(rec.id, rec.generation, { slot: vm.ref.slot, pid: vm.pid, pidStartTime: vm.pidStartTime }))) return;
    if (hookEnabled(image.config, 'run')) {
      const failed = await this.vms.hook(vm, image, 'run', { microvmId: rec.id, runHookPayload: runHookPayload ?? '' });
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
    if (rec.state !== 'RUNNING') throw conflict(rec, 'suspended');
    // A checkpoint takes disk space: better refused now than failed halfway.
    this.capacity?.require(`suspending MicroVM ${rec.id}`);
    const next = await this.transition(rec, 'SUSPENDING', reason, { idleDeadline: null });
    if (next) void this.queues.enqueue(rec.id, () => this.doSuspend(next));
    return next;
  }

  private async doSuspend(rec: VmRecord): Promise<void> {
    const image = await this.vms.imageOf(rec);
    const vm = this.driver.get(rec.id);
    if (!vm) return void (await this.fail(rec.id, rec.generation, 'the VM was gone when it was to be suspended'));
    if (hookEnabled(image.config, 'suspend')) {
      const failed = await this.vms.hook(vm, image, 'suspend');
      if (failed) return this.runOn(rec, failed);
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
      // Not suspended (its disk is full, say), but nothing was lost: it runs on and says why.
      if (isCellaError(err) && err.details.stillRunning === true) return this.runOn(rec, err.message);
      return void (await this.fail(rec.id, rec.generation, `suspend failed: ${(err as Error).message}`));
    }
    this.logs.end(rec.id);
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) return;
    // pid stays: a parked QEMU (engine parkSeconds) must still be found, and ended, after a restart.
    await this.transition(cur, 'SUSPENDED', null, { ...checkpointed(this.driver, cur, bytes), suspendedDeadline: suspendedDeadlineFor(cur, this.now()) });
  }

  /** A suspend that did not happen: the VM, still at `rec`'s generation, runs on, and the log says why. */
  private async runOn(rec: VmRecord, why: string): Promise<void> {
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) return;
    this.activity.touch(rec.id);
    await this.transition(cur, 'RUNNING', `not suspended: ${why}`, { idleDeadline: this.activity.idleDeadline(cur) });
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
    if (rec.state !== 'SUSPENDED') throw conflict(rec, 'resumed');
    this.capacity?.require(`resuming MicroVM ${id}`);
    return this.queues.enqueue(id, () => resumeVm(this.host, rec));
  }

  /**
   * For endpoint traffic: resolves once the VM runs, resuming it if it is
   * suspended and its policy allows auto-resume (concurrent callers share one
   * resume). A VM that is starting or suspending is waited for.
   */
  wake(id: string, timeoutMs = 60_000): Promise<VmRecord> {
    return wake(this.host, id, timeoutMs);
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
      const failed = await this.vms.hook(vm, image, 'terminate');
      if (failed) this.log(`MicroVM ${rec.id}: ${failed}; terminating anyway`);
      await this.logs.settle(rec.id);
    }
    // What runs is released by its own reference (its slot may not be stored if it was terminated while
    // starting); a VM that never got a slot has nothing on the host (its launch failed and cleaned up).
    const placed = (await this.store.getVm(rec.id)) ?? rec;
    const ref = vm?.ref ?? (placed.slot !== null ? await this.vms.ref(placed) : undefined);
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
      if (rec.state === 'TERMINATING' || rec.state === 'TERMINATED') throw conflict(rec, 'given a new timeout');
      const maxDeadline = opts.extendOnly ? Math.max(rec.maxDeadline, at) : at;
      const next = await this.store.patchVm(id, rec.generation, { maxDeadline });
      if (!next) continue;
      this.timers.arm(next);
      return next;
    }
  }

  // ---------- restart ----------

  /**
   * After a daemon restart: makes every live VM's state true again (./recovery.ts).
   * Returns the VMs that keep host resources (for the engine's reclaim).
   */
  recover(opts: { reapplyNetwork?: boolean } = {}): Promise<VmRef[]> {
    return recoverAll(this.host, opts);
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

  /** The VM's record, or NOT_FOUND. */
  require(id: string): Promise<VmRecord> {
    return this.vms.require(id);
  }
}
