/**
 * Deadlines: which of a VM's stored deadlines applies in its state, one timer
 * per VM for the nearest, and what is due when it fires. The timer carries
 * the generation it was armed for, so a late one never acts on a VM that
 * moved on (the lifecycle's fire() checks it against the store).
 */
import type { Store, VmRecord } from '../store/index.js';
import type { Activity } from './activity.js';

/** An idle suspend (or a suspend at a timeout) refused (a full disk, say) is tried again this much later. */
export const IDLE_RETRY_MS = 60_000;

/** Longest setTimeout Node accepts; longer deadlines are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The maximum-duration deadline as it applies in the VM's state: a timeout that suspends counts only while the VM runs. */
export function maxDeadlineOf(rec: VmRecord): number | null {
  return rec.spec.timeout?.onExpiry === 'suspend' && rec.state !== 'RUNNING' ? null : rec.maxDeadline;
}

/** When a suspended VM ends if it is not resumed (idlePolicy.suspendedDurationSeconds), counted from `now`. */
export function suspendedDeadlineFor(rec: VmRecord, now: number): number | null {
  const ttl = rec.spec.idlePolicy?.suspendedDurationSeconds;
  return ttl === undefined ? null : now + ttl * 1000;
}

/** Which deadline of `rec` has passed at `now`, in the order they win; null when none has (the timer is re-armed). */
function dueDeadline(rec: VmRecord, now: number): 'timeout' | 'idle' | 'suspended' | null {
  const max = maxDeadlineOf(rec);
  if (max !== null && now >= max) return 'timeout';
  if (rec.state === 'RUNNING' && rec.idleDeadline !== null && now >= rec.idleDeadline) return 'idle';
  if (rec.state === 'SUSPENDED' && rec.suspendedDeadline !== null && now >= rec.suspendedDeadline) return 'suspended';
  return null;
}

/** One timer per VM, for the nearest of its stored deadlines; `fire` is called with the generation it was armed for. */
export class DeadlineTimers {
  /** Each VM's timer, and the generation it was armed for: a record older than that never re-arms it. */
  private readonly timers = new Map<string, { timer?: NodeJS.Timeout; generation: number }>();
  private closed = false;

  constructor(
    private readonly now: () => number,
    private readonly fire: (id: string, generation: number) => Promise<void>,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Arms the timer of `rec`. A record older than the one the timer was armed
   * for leaves it alone: a job that read the VM before a transition must not
   * put back a timer it replaced.
   */
  arm(rec: VmRecord): void {
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

  get isClosed(): boolean {
    return this.closed;
  }

  /** Stops every timer; none is armed again. */
  close(): void {
    this.closed = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }
}

/** What the deadline policy acts through: the lifecycle's store, timer and operations. */
export interface DeadlineHost {
  store: Store;
  log(line: string): void;
  now(): number;
  closed(): boolean;
  activity: Activity;
  arm(rec: VmRecord): void;
  /** Suspends `rec` if it is still at its generation (throws if it may not be suspended now). */
  suspend(rec: VmRecord, reason: string | null): Promise<VmRecord | undefined>;
  terminate(id: string, reason: string): Promise<VmRecord>;
}

/** A VM's timer fired: acts on the deadline that passed, unless the VM moved on since it was armed. */
export async function onDeadline(host: DeadlineHost, id: string, generation: number): Promise<void> {
  const rec = await host.store.getVm(id);
  if (!rec || rec.generation !== generation || host.closed()) return;
  const now = host.now();
  switch (dueDeadline(rec, now)) {
    case 'timeout':
      if (rec.spec.timeout?.onExpiry === 'suspend') {
        try {
          await host.suspend(rec, 'suspended: its timeout was reached');
        } catch (err) {
          host.log(`MicroVM ${id}: suspend at its timeout refused: ${(err as Error).message}`);
          const next = await host.store.patchVm(id, generation, { maxDeadline: now + IDLE_RETRY_MS });
          if (next) host.arm(next);
        }
        return;
      }
      void host
        .terminate(id, rec.spec.timeout ? 'its timeout was reached' : `maximum duration of ${rec.spec.maximumDurationInSeconds} s reached`)
        .catch(() => {});
      return;
    case 'idle': {
      const next = host.activity.idleDeadline(rec);
      if (!host.activity.streaming(id) && next !== null && next <= now) {
        try {
          // From the record this timer read: a VM that moved on since (resumed, say) is not suspended by it.
          await host.suspend(rec, null);
          return;
        } catch (err) {
          host.log(`MicroVM ${id}: idle suspend refused: ${(err as Error).message}`);
          return postponeIdle(host, id, generation, now + IDLE_RETRY_MS);
        }
      }
      return postponeIdle(host, id, generation, Math.max(next ?? now, now + 1000));
    }
    case 'suspended':
      void host.terminate(id, `suspended for longer than suspendedDurationSeconds (${rec.spec.idlePolicy?.suspendedDurationSeconds} s)`).catch(() => {});
      return;
    case null:
      host.arm(rec);
  }
}

/** Moves the idle deadline, and the timer with it, unless the VM moved on (its own timer is armed then). */
async function postponeIdle(host: DeadlineHost, id: string, generation: number, at: number): Promise<void> {
  const next = await host.store.patchVm(id, generation, { idleDeadline: at });
  if (next) host.arm(next);
}
