/**
 * The MicroVM lifecycle: the contract's states (./states.ts), one writer of
 * state (transition), stored deadlines re-armed by one timer per VM, runtime
 * hooks, and recovery after a daemon restart.
 *
 * Every state change bumps the VM's generation. A timer or a background job
 * carries the generation it was made for; when it comes back to a VM that has
 * moved on (terminated while starting, resumed while a timer was pending) its
 * write is refused and it does nothing.
 */
import { EventEmitter } from 'node:events';
import { existsSync, rmSync, statSync } from 'node:fs';
import { CellaError, hookPort, isCellaError, type RuntimeHook, type VmState } from '../contract/index.js';
import type { DiskCapacity } from '../capacity/index.js';
import { vmFiles, type BlockIoError, type VmRef } from '../engine/index.js';
import type { LogHub } from '../logs/index.js';
import { applyPolicy, networkForSlot, rememberPolicy } from '../net/index.js';
import type { Store, VmPatch, VmRecord } from '../store/index.js';
import type { DriverVm, VmDriver, VmExit } from './driver.js';
import { callHook, hookEnabled, hookTimeoutMs } from './hooks.js';
import type { RunnableImage } from './pending.js';
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

/** The maximum-duration deadline as it applies in the VM's state: a timeout that suspends counts only while the VM runs. */
function maxDeadlineOf(rec: VmRecord): number | null {
  return rec.spec.timeout?.onExpiry === 'suspend' && rec.state !== 'RUNNING' ? null : rec.maxDeadline;
}

/** An idle suspend (or a suspend at a timeout) refused (a full disk, say) is tried again this much later. */
const IDLE_RETRY_MS = 60_000;

/** Longest setTimeout Node accepts; longer deadlines are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Lifecycle extends EventEmitter {
  private readonly store: Store;
  private readonly driver: VmDriver;
  private readonly logs: LogHub;
  private readonly images: (name: string, version: string) => Promise<RunnableImage | undefined>;
  private readonly capacity: Capacity | undefined;
  private readonly log: (line: string) => void;
  /** RUNNING VMs that QEMU stopped because the host's disk was full, each with the write of its reason; continued when space returns. */
  private readonly diskPaused = new Map<string, Promise<void>>();
  private readonly now: () => number;
  /** Each VM's timer, and the generation it was armed for: a record older than that never re-arms it. */
  private readonly timers = new Map<string, { timer?: NodeJS.Timeout; generation: number }>();
  /** Per-VM queue: operations on one VM never interleave. */
  private readonly queues = new Map<string, Promise<unknown>>();
  /** Resumes in flight, shared by every caller that needs the VM running. */
  private readonly resuming = new Map<string, Promise<VmRecord>>();
  /** Last endpoint activity and open streams per VM, for the idle policy. */
  private readonly activity = new Map<string, number>();
  private readonly streams = new Map<string, number>();
  /** Agents whose guest signals are already wired (a VM resumed in place keeps its agent). */
  private readonly signalled = new WeakSet<object>();
  private closed = false;
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
    this.driver.on('vm-exit', this.onExit);
    this.driver.on('vm-io-error', this.onIoError);
  }

  /**
   * QEMU stopped a VM on a write its host could not do (werror=enospc): the
   * guest sees nothing and keeps its data; the VM stays RUNNING, paused,
   * with a reason, and is continued when space returns (continueDiskPaused).
   * Errors QEMU reported to the guest (`action: report`) are the guest's own.
   */
  private readonly onIoError = (id: string, data: BlockIoError): void => {
    if (data.action !== 'stop' || this.diskPaused.has(id)) return;
    // Marked at once: a second report while the reason is being written is the same pause.
    const recorded = this.recordDiskPause(id, data).catch((err: Error) => this.log(`MicroVM ${id}: its pause could not be recorded: ${err.message}`));
    this.diskPaused.set(id, recorded);
  };

  private async recordDiskPause(id: string, data: BlockIoError): Promise<void> {
    const rec = await this.store.getVm(id);
    if (!rec || rec.state !== 'RUNNING') return void this.diskPaused.delete(id);
    const why = data.nospace ? "the host's disk is full" : `a write to its disk failed on the host (${data.reason ?? 'I/O error'})`;
    const reason = `paused: ${why}; it continues by itself once there is space again`;
    this.log(`MicroVM ${id}: ${reason}`);
    await this.store.patchVm(id, rec.generation, { stateReason: reason });
  }

  /** Continues the VMs a full disk paused, if the disk has room again; those it pauses again wait for the next call. */
  async continueDiskPaused(): Promise<void> {
    if (this.capacity?.isLow) return;
    for (const [id, recorded] of [...this.diskPaused]) {
      // The pause's reason is written before it is cleared, never after.
      await recorded;
      if (this.diskPaused.get(id) !== recorded) continue;
      this.diskPaused.delete(id);
      const rec = await this.store.getVm(id);
      if (rec?.state !== 'RUNNING') continue;
      if (await this.driver.cont(id)) {
        this.log(`MicroVM ${id}: continued, the disk has room again`);
        await this.store.patchVm(id, rec.generation, { stateReason: null });
      } else {
        this.diskPaused.set(id, Promise.resolve());
      }
    }
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
    if (to !== 'RUNNING') this.diskPaused.delete(rec.id);
    this.arm(next);
    this.emit('state', next);
    return next;
  }

  // ---------- operations ----------

  /** Records a new PENDING VM (already inserted by the caller) and starts it in the background. */
  start(rec: VmRecord, runHookPayload: string | undefined): void {
    this.arm(rec);
    this.emit('state', rec);
    void this.enqueue(rec.id, () => this.doStart(rec, runHookPayload));
  }

  private async doStart(rec: VmRecord, runHookPayload: string | undefined): Promise<void> {
    // Terminated before this job ran (its terminate may have run already): launching it now would leave a QEMU nobody ends.
    if ((await this.store.getVm(rec.id))?.generation !== rec.generation) return;
    const image = await this.imageOf(rec);
    let vm: DriverVm;
    try {
      vm = await this.driver.launch(image.dir, rec.id, { appLog: null, onSpawn: this.recordPid(rec), ...(rec.spec.network ? { network: rec.spec.network } : {}) });
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
    this.activity.set(rec.id, this.now());
    await this.transition(cur, 'RUNNING', null, { idleDeadline: this.idleDeadline(cur) });
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
    if (next) void this.enqueue(rec.id, () => this.doSuspend(next));
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
        this.activity.set(rec.id, this.now());
        await this.transition(cur, 'RUNNING', `not suspended: ${failed}`, { idleDeadline: this.idleDeadline(cur) });
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
        this.activity.set(rec.id, this.now());
        await this.transition(cur, 'RUNNING', `not suspended: ${err.message}`, { idleDeadline: this.idleDeadline(cur) });
        return;
      }
      return void (await this.fail(rec.id, rec.generation, `suspend failed: ${(err as Error).message}`));
    }
    this.logs.end(rec.id);
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) return;
    // pid stays: a parked QEMU (engine parkSeconds) must still be found, and ended, after a restart.
    await this.transition(cur, 'SUSPENDED', null, { ...this.checkpointed(cur, bytes), suspendedDeadline: this.suspendedDeadlineFor(cur) });
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
    return this.enqueue(id, () => this.doResume(rec));
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
          await this.store.patchVm(rec.id, rec.generation, this.checkpointed(rec, back.bytes));
        }
        throw new CellaError('HOOK_FAILED', `MicroVM ${rec.id} was not resumed: ${failed}`, { details: { resourceId: rec.id, resourceType: 'Microvm' } });
      }
    }
    const cur = await this.store.getVm(rec.id);
    if (cur?.generation !== rec.generation) throw this.conflict(cur ?? rec, 'resumed');
    this.activity.set(rec.id, this.now());
    const next = await this.transition(cur, 'RUNNING', null, { suspendedDeadline: null, checkpointBytes: 0, idleDeadline: this.idleDeadline(cur) });
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
      const timer = setTimeout(() => {
        this.removeListener('state', onState);
        reject(new CellaError('INVALID_STATE', `MicroVM ${id} did not leave its state in time`, { details: { resourceId: id, resourceType: 'Microvm' } }));
      }, Math.max(0, deadline - this.now()));
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
    void this.enqueue(id, () => this.doTerminate(next));
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
    this.activity.delete(rec.id);
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
    this.activity.set(id, this.now());
  }

  /** An open stream counts as activity for as long as it is open; call the result when it closes. */
  holdActive(id: string): () => void {
    this.streams.set(id, (this.streams.get(id) ?? 0) + 1);
    this.touch(id);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.touch(id);
      const n = (this.streams.get(id) ?? 1) - 1;
      if (n <= 0) this.streams.delete(id);
      else this.streams.set(id, n);
    };
  }

  // ---------- timers ----------

  private idleDeadline(rec: VmRecord): number | null {
    const idle = rec.spec.idlePolicy?.maxIdleDurationSeconds;
    return idle === undefined ? null : (this.activity.get(rec.id) ?? this.now()) + idle * 1000;
  }

  /**
   * One timer per VM, for the nearest of its stored deadlines. A record
   * older than the one the timer was armed for leaves it alone: a job that
   * read the VM before a transition must not put back a timer it replaced.
   */
  private arm(rec: VmRecord): void {
    const armed = this.timers.get(rec.id);
    if (armed && armed.generation > rec.generation) return;
    clearTimeout(armed?.timer);
    this.timers.delete(rec.id);
    if (this.closed || rec.state === 'TERMINATED') return;
    if (rec.state === 'TERMINATING') return void this.timers.set(rec.id, { generation: rec.generation });
    const due = [maxDeadlineOf(rec), rec.state === 'RUNNING' ? rec.idleDeadline : null, rec.state === 'SUSPENDED' ? rec.suspendedDeadline : null].filter(
      (d): d is number => d !== null,
    );
    if (due.length === 0) return;
    const at = Math.min(...due);
    const timer = setTimeout(
      () => void this.fire(rec.id, rec.generation).catch((err: Error) => this.log(`MicroVM ${rec.id}: its timer failed: ${err.message}`)),
      Math.min(Math.max(at - this.now(), 0), MAX_TIMER_MS),
    );
    timer.unref();
    this.timers.set(rec.id, { timer, generation: rec.generation });
  }

  private async fire(id: string, generation: number): Promise<void> {
    const rec = await this.store.getVm(id);
    if (!rec || rec.generation !== generation || this.closed) return;
    const now = this.now();
    const max = maxDeadlineOf(rec);
    if (max !== null && now >= max) {
      if (rec.spec.timeout?.onExpiry === 'suspend') {
        try {
          await this.suspendFrom(rec, 'suspended: its timeout was reached');
        } catch (err) {
          this.log(`MicroVM ${id}: suspend at its timeout refused: ${(err as Error).message}`);
          const next = await this.store.patchVm(id, generation, { maxDeadline: now + IDLE_RETRY_MS });
          if (next) this.arm(next);
        }
        return;
      }
      const why = rec.spec.timeout ? 'its timeout was reached' : `maximum duration of ${rec.spec.maximumDurationInSeconds} s reached`;
      void this.terminate(id, why).catch(() => {});
      return;
    }
    if (rec.state === 'RUNNING' && rec.idleDeadline !== null && now >= rec.idleDeadline) {
      const next = this.idleDeadline(rec);
      if ((this.streams.get(id) ?? 0) === 0 && next !== null && next <= now) {
        try {
          // From the record this timer read: a VM that moved on since (resumed, say) is not suspended by it.
          await this.suspendFrom(rec, null);
          return;
        } catch (err) {
          this.log(`MicroVM ${id}: idle suspend refused: ${(err as Error).message}`);
          return this.postponeIdle(id, generation, now + IDLE_RETRY_MS);
        }
      }
      return this.postponeIdle(id, generation, Math.max(next ?? now, now + 1000));
    }
    if (rec.state === 'SUSPENDED' && rec.suspendedDeadline !== null && now >= rec.suspendedDeadline) {
      void this.terminate(id, `suspended for longer than suspendedDurationSeconds (${rec.spec.idlePolicy?.suspendedDurationSeconds} s)`).catch(() => {});
      return;
    }
    this.arm(rec);
  }

  /**
   * Moves a VM's timeout (spec.timeout: E2B's setTimeout and connect) to
   * `at`, stored before it is armed so a restart keeps it; `extendOnly`
   * never brings it closer. Refused once the VM is terminating.
   */
  async setDeadline(id: string, at: number, opts: { extendOnly?: boolean } = {}): Promise<VmRecord> {
    for (;;) {
      const rec = await this.require(id);
      if (!rec.spec.timeout) throw new CellaError('INVALID_STATE', `MicroVM ${id} has a fixed maximum duration`, { details: { resourceId: id, resourceType: 'Microvm' } });
      if (rec.state === 'TERMINATING' || rec.state === 'TERMINATED') throw this.conflict(rec, 'given a new timeout');
      const maxDeadline = opts.extendOnly ? Math.max(rec.maxDeadline, at) : at;
      const next = await this.store.patchVm(id, rec.generation, { maxDeadline });
      if (!next) continue;
      this.arm(next);
      return next;
    }
  }

  /** Moves the idle deadline, and the timer with it, unless the VM moved on (its own timer is armed then). */
  private async postponeIdle(id: string, generation: number, at: number): Promise<void> {
    const next = await this.store.patchVm(id, generation, { idleDeadline: at });
    if (next) this.arm(next);
  }

  // ---------- restart ----------

  /**
   * After a daemon restart: makes every live VM's state true again. Running
   * QEMUs are re-adopted; what cannot be re-adopted ends with a reason.
   * Returns the VMs that keep host resources (for the engine's reclaim).
   */
  async recover(opts: { reapplyNetwork?: boolean } = {}): Promise<VmRef[]> {
    const keep: VmRef[] = [];
    for (const rec of await this.store.liveVms()) {
      const kept = await this.recoverOne(rec).catch(async (err: Error) => {
        // A VM whose state cannot be made true again ends, saying why, rather than staying in a state nothing backs.
        this.log(`MicroVM ${rec.id}: recovery failed: ${err.message}`);
        const cur = await this.store.getVm(rec.id);
        if (cur && cur.state !== 'TERMINATING' && cur.state !== 'TERMINATED') {
          const t = await this.transition(cur, 'TERMINATING', `cellad could not recover the VM after a restart: ${err.message}`, { idleDeadline: null, suspendedDeadline: null });
          if (t) await this.doTerminate(t).catch(() => {});
        }
        return undefined;
      });
      if (!kept) continue;
      keep.push(kept);
      // A host restart took the namespaces with it: a suspended VM gets its own back, with its policy.
      const made = await this.driver.ensureNetwork(kept, rec.spec.network).catch((err: Error) => {
        this.log(`MicroVM ${rec.id}: its network namespace could not be made again: ${err.message}`);
        return false;
      });
      if (made || !rec.spec.network) continue;
      // Its namespace kept its rules, unless they point at a DNS port that is no longer the forwarder's; the
      // forwarder's memory of which names it may resolve went with the old cellad.
      if (opts.reapplyNetwork) {
        await applyPolicy(networkForSlot(kept.slot), rec.spec.network).catch((err: Error) => this.log(`MicroVM ${rec.id}: its network rules could not be renewed: ${err.message}`));
      } else {
        rememberPolicy({ slot: kept.slot }, rec.spec.network);
      }
    }
    return keep;
  }

  /**
   * One live VM after a restart (ADR 0007). Its QEMU is found by the pid the
   * store recorded when that QEMU was spawned; its checkpoint file says
   * whether a suspend finished and whether a resume passed its point of no
   * return. A QEMU that is not adopted here is killed by the engine's reclaim.
   */
  private async recoverOne(rec: VmRecord): Promise<VmRef | undefined> {
    const ref = rec.slot === null ? undefined : await this.ref(rec);
    const vm = ref && rec.pid !== null && rec.pidStartTime !== null ? await this.driver.adopt(ref, rec.pid, rec.pidStartTime, { appLog: null }) : undefined;
    const files = vmFiles(this.driver.vmDir(rec.id));
    const checkpoint = existsSync(files.checkpoint);
    const end = async (reason: string): Promise<undefined> => {
      if (vm) vm.beginStop();
      const t = await this.transition(rec, 'TERMINATING', reason, { idleDeadline: null, suspendedDeadline: null });
      if (t) await this.doTerminate(t);
      return undefined;
    };
    /** The adopted QEMU is the VM: it runs on, whatever step it was stopped at. */
    const runOn = async (reason: string | null): Promise<VmRef | undefined> => {
      if (!vm || !ref) return undefined;
      this.attach(rec, vm);
      if (!(await vm.queryStatus()).running) {
        // Stopped on its way in or out: it runs again, with the clock and entropy any restored guest gets.
        await vm.qmp.execute('cont');
        await Promise.all([vm.agent.setClock(), vm.agent.reseed()]);
      }
      rmSync(`${files.checkpoint}.consumed`, { force: true });
      this.activity.set(rec.id, this.now());
      if (rec.state === 'RUNNING') {
        const next = await this.store.patchVm(rec.id, rec.generation, { idleDeadline: this.idleDeadline(rec) });
        if (next) this.arm(next);
      } else {
        await this.transition(rec, 'RUNNING', reason, { suspendedDeadline: null, checkpointBytes: 0, idleDeadline: this.idleDeadline(rec) });
      }
      return ref;
    };
    /** The checkpoint holds the VM: any QEMU of it goes, and it stays (or becomes) SUSPENDED. */
    const suspended = async (): Promise<VmRef | undefined> => {
      if (vm) {
        vm.beginStop();
        await vm.qemu.kill();
      }
      const patch = { pid: null, pidStartTime: null };
      if (rec.state === 'SUSPENDED') {
        const next = await this.store.patchVm(rec.id, rec.generation, patch);
        if (next) this.arm(next);
      } else {
        await this.transition(rec, 'SUSPENDED', null, { ...patch, ...this.checkpointed(rec, 0), suspendedDeadline: this.suspendedDeadlineFor(rec) });
      }
      return ref;
    };
    switch (rec.state) {
      case 'PENDING':
        return end('cellad restarted before the VM finished starting');
      case 'TERMINATING':
        await this.doTerminate(rec);
        return undefined;
      case 'RUNNING':
        return vm ? runOn(null) : end('the VM was lost while cellad was down: its QEMU process is gone');
      case 'SUSPENDING':
        // A complete checkpoint finishes the suspend; without one, the VM runs on as it was.
        if (checkpoint && ref) return suspended();
        return vm ? runOn('suspend interrupted by a cellad restart') : end('the VM was lost while cellad was down: its QEMU process is gone');
      case 'SUSPENDED':
        // With its checkpoint, any QEMU found is a parked one or a restore cut short: the checkpoint wins.
        if (checkpoint && ref) return suspended();
        // Without it, a resume had passed its point of no return: the QEMU found is the VM.
        if (vm) return runOn(null);
        return end('the VM was lost while cellad was down: its checkpoint is gone');
      case 'TERMINATED':
        return undefined;
    }
  }

  private checkpointFile(id: string): string {
    return vmFiles(this.driver.vmDir(id)).checkpoint;
  }

  /** Usage after a suspend wrote `bytes`: what was written, and what the checkpoint now holds on disk. */
  private checkpointed(rec: VmRecord, bytes: number): VmPatch {
    const file = this.checkpointFile(rec.id);
    return { bytesWritten: rec.bytesWritten + bytes, checkpointBytes: existsSync(file) ? statSync(file).size : bytes };
  }

  private suspendedDeadlineFor(rec: VmRecord): number | null {
    const ttl = rec.spec.idlePolicy?.suspendedDurationSeconds;
    return ttl === undefined ? null : this.now() + ttl * 1000;
  }

  /** Stops timers; VMs keep running (a restarted daemon re-adopts them). */
  close(): void {
    this.closed = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.driver.removeListener('vm-exit', this.onExit);
    this.driver.removeListener('vm-io-error', this.onIoError);
  }

  /** Waits for the background work queued so far. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.queues.values()]);
  }

  // ---------- helpers ----------

  private enqueue<T>(id: string, job: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const p = prev.then(job, job);
    const tail = p.catch((err: unknown) => {
      if (!isCellaError(err)) this.log(`MicroVM ${id}: ${(err as Error).stack ?? String(err)}`);
    });
    this.queues.set(id, tail);
    void tail.then(() => {
      if (this.queues.get(id) === tail) this.queues.delete(id);
    });
    return p;
  }

  /**
   * Records a VM's new QEMU in the store the moment it exists, before it is
   * loaded: a cellad that dies halfway through a launch or resume leaves a
   * QEMU the next start finds by this pid, and adopts or kills (ADR 0007).
   */
  private recordPid(rec: VmRecord): (pid: number, startTime: string) => void {
    return (pid, pidStartTime) =>
      void this.store.patchVm(rec.id, rec.generation, { pid, pidStartTime }).catch((err: Error) => this.log(`MicroVM ${rec.id}: its pid could not be recorded: ${err.message}`));
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
