/**
 * Waking a VM for endpoint traffic: it resolves once the VM runs, resuming a
 * suspended one whose policy allows auto-resume and waiting out a start or a
 * suspend under way. It writes no state of its own; a resume goes through the
 * lifecycle's resume(), and the wait follows the lifecycle's `state` events.
 */
import type { EventEmitter } from 'node:events';
import { CellaError } from '../contract/index.js';
import type { Store, VmRecord } from '../store/index.js';
import { conflict, type VmAccess } from './vms.js';

/** What waking uses of the lifecycle. */
export interface WakeHost {
  now(): number;
  store: Pick<Store, 'getVm'>;
  vms: Pick<VmAccess, 'require'>;
  /** Whether a full disk has paused the (RUNNING) VM. */
  diskPaused(id: string): boolean;
  resume(id: string): Promise<VmRecord>;
  /** Emits `state` with each VM's record as a transition left it. */
  events: EventEmitter;
}

export async function wake(host: WakeHost, id: string, timeoutMs: number): Promise<VmRecord> {
  const deadline = host.now() + timeoutMs;
  for (;;) {
    const rec = await host.vms.require(id);
    switch (rec.state) {
      case 'RUNNING':
        if (host.diskPaused(id)) {
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
        return host.resume(id);
      case 'PENDING':
      case 'SUSPENDING':
        await stateChange(host, id, rec.generation, deadline);
        break;
      case 'TERMINATING':
      case 'TERMINATED':
        throw conflict(rec, 'reached');
    }
  }
}

/** Resolves when the VM's generation moves past `generation`, or rejects at `deadline`. */
function stateChange(host: WakeHost, id: string, generation: number, deadline: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onState = (r: VmRecord): void => {
      if (r.id !== id || r.generation <= generation) return;
      clearTimeout(timer);
      host.events.removeListener('state', onState);
      resolve();
    };
    const timer = setTimeout(
      () => {
        host.events.removeListener('state', onState);
        reject(new CellaError('INVALID_STATE', `MicroVM ${id} did not leave its state in time`, { details: { resourceId: id, resourceType: 'Microvm' } }));
      },
      Math.max(0, deadline - host.now()),
    );
    host.events.on('state', onState);
    // It may have moved on before the listener was in place (a failed read leaves it to the timer).
    void host.store.getVm(id).then(
      (now) => now && onState(now),
      () => {},
    );
  });
}
