/**
 * The resume job: a SUSPENDED VM's QEMU back from its checkpoint, its resume
 * hook called, and RUNNING written through the lifecycle's transition().
 * The state stays SUSPENDED until the VM runs, as in the contract; a refused
 * hook puts the VM back to sleep with what it had.
 */
import { CellaError, isCellaError, type VmState } from '../contract/index.js';
import type { LogHub } from '../logs/index.js';
import type { Store, VmPatch, VmRecord } from '../store/index.js';
import type { Activity } from './activity.js';
import type { DriverVm, VmDriver } from './driver.js';
import { hookEnabled } from './hooks.js';
import { checkpointed } from './recovery.js';
import { conflict, type VmAccess } from './vms.js';

/** What the resume job uses of the lifecycle. */
export interface ResumeHost {
  store: Store;
  driver: VmDriver;
  logs: LogHub;
  log(line: string): void;
  vms: VmAccess;
  activity: Activity;
  /** The lifecycle's one writer of state. */
  transition(rec: VmRecord, to: VmState, reason: string | null, patch?: VmPatch): Promise<VmRecord | undefined>;
  /** A failure on the way: the VM goes, with the reason, unless it moved on meanwhile. */
  fail(id: string, generation: number, reason: string): Promise<void>;
}

/** Resumes `rec` (read SUSPENDED) and resolves with it RUNNING; rejects if it failed or moved on. */
export async function resumeVm(host: ResumeHost, rec: VmRecord): Promise<VmRecord> {
  const { store, driver, vms } = host;
  const image = await vms.imageOf(rec);
  const cur0 = await store.getVm(rec.id);
  if (cur0?.generation !== rec.generation) throw conflict(cur0 ?? rec, 'resumed');
  let vm: DriverVm;
  try {
    vm = await driver.resume(await vms.ref(rec), { appLog: null, onSpawn: vms.recordPid(rec) });
  } catch (err) {
    const reason = `resume failed: ${(err as Error).message}`;
    await store.patchVm(rec.id, rec.generation, { stateReason: reason });
    throw new CellaError(isCellaError(err, 'INSUFFICIENT_CAPACITY') ? 'INSUFFICIENT_CAPACITY' : 'INTERNAL', reason, { cause: err });
  }
  vms.attach(rec, vm);
  await store.patchVm(rec.id, rec.generation, { pid: vm.pid, pidStartTime: vm.pidStartTime, bytesRead: rec.bytesRead + rec.checkpointBytes });
  if (hookEnabled(image.config, 'resume')) {
    const failed = await vms.hook(vm, image, 'resume');
    if (failed) {
      // The VM goes back to sleep with what it had; a later resume may succeed.
      const back = await driver.suspend(vm).catch((err: Error) => err);
      host.logs.end(rec.id);
      if (back instanceof Error) {
        await host.fail(rec.id, rec.generation, `${failed}, and suspending it again failed: ${back.message}`);
      } else {
        // Asleep with all it had: healthy, so no stateReason; the caller gets the error, the log the reason.
        host.log(`MicroVM ${rec.id}: not resumed: ${failed}`);
        await store.patchVm(rec.id, rec.generation, checkpointed(driver, rec, back.bytes));
      }
      throw new CellaError('HOOK_FAILED', `MicroVM ${rec.id} was not resumed: ${failed}`, { details: { resourceId: rec.id, resourceType: 'Microvm' } });
    }
  }
  const cur = await store.getVm(rec.id);
  if (cur?.generation !== rec.generation) throw conflict(cur ?? rec, 'resumed');
  host.activity.touch(rec.id);
  const next = await host.transition(cur, 'RUNNING', null, { suspendedDeadline: null, checkpointBytes: 0, idleDeadline: host.activity.idleDeadline(cur) });
  if (!next) throw conflict(cur, 'resumed');
  return next;
}
