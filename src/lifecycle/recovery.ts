/**
 * Recovery after a daemon restart (ADR 0007): every live VM's state is made
 * true again. Running QEMUs are re-adopted; what cannot be re-adopted ends
 * with a reason. State is written only through the lifecycle's transition().
 */
import { existsSync, rmSync, statSync } from 'node:fs';
import type { VmState } from '../contract/index.js';
import { vmFiles, type VmRef } from '../engine/index.js';
import { applyPolicy, networkForSlot, rememberPolicy } from '../net/index.js';
import type { Store, VmPatch, VmRecord } from '../store/index.js';
import type { VmDriver } from './driver.js';
import type { VmAccess } from './vms.js';

/** Usage after a suspend wrote `bytes`: what was written, and what the checkpoint now holds on disk. */
export function checkpointed(driver: VmDriver, rec: VmRecord, bytes: number): VmPatch {
  const file = vmFiles(driver.vmDir(rec.id)).checkpoint;
  return { bytesWritten: rec.bytesWritten + bytes, checkpointBytes: existsSync(file) ? statSync(file).size : bytes };
}

/** What recovery uses of the lifecycle. */
export interface RecoveryHost {
  store: Store;
  driver: VmDriver;
  log(line: string): void;
  /** The lifecycle's one writer of state. */
  transition(rec: VmRecord, to: VmState, reason: string | null, patch?: VmPatch): Promise<VmRecord | undefined>;
  /** Releases a TERMINATING VM and records it TERMINATED. */
  finishTerminate(rec: VmRecord): Promise<void>;
  /** The engine's handle of a VM; wiring a re-adopted QEMU's app log and guest signals. */
  vms: Pick<VmAccess, 'ref' | 'attach'>;
  arm(rec: VmRecord): void;
  /** Marks the VM active now and returns its idle deadline. */
  activeNow(rec: VmRecord): number | null;
  suspendedDeadlineFor(rec: VmRecord): number | null;
}

/** Recovers every live VM; returns those that keep host resources (for the engine's reclaim). */
export async function recoverAll(host: RecoveryHost, opts: { reapplyNetwork?: boolean }): Promise<VmRef[]> {
  const keep: VmRef[] = [];
  for (const rec of await host.store.liveVms()) {
    const kept = await recoverOne(host, rec).catch(async (err: Error) => {
      // A VM whose state cannot be made true again ends, saying why, rather than staying in a state nothing backs.
      host.log(`MicroVM ${rec.id}: recovery failed: ${err.message}`);
      const cur = await host.store.getVm(rec.id);
      if (cur && cur.state !== 'TERMINATING' && cur.state !== 'TERMINATED') {
        const t = await host.transition(cur, 'TERMINATING', `cellad could not recover the VM after a restart: ${err.message}`, {
          idleDeadline: null,
          suspendedDeadline: null,
        });
        if (t) await host.finishTerminate(t).catch(() => {});
      }
      return undefined;
    });
    if (!kept) continue;
    keep.push(kept);
    // A host restart took the namespaces with it: a suspended VM gets its own back, with its policy.
    const made = await host.driver.ensureNetwork(kept, rec.spec.network).catch((err: Error) => {
      host.log(`MicroVM ${rec.id}: its network namespace could not be made again: ${err.message}`);
      return false;
    });
    if (made || !rec.spec.network) continue;
    // Its namespace kept its rules, unless they point at a DNS port that is no longer the forwarder's; the
    // forwarder's memory of which names it may resolve went with the old cellad.
    if (opts.reapplyNetwork) {
      await applyPolicy(networkForSlot(kept.slot), rec.spec.network).catch((err: Error) =>
        host.log(`MicroVM ${rec.id}: its network rules could not be renewed: ${err.message}`),
      );
    } else {
      rememberPolicy({ slot: kept.slot }, rec.spec.network);
    }
  }
  return keep;
}

/**
 * One live VM after a restart. Its QEMU is found by the pid the store
 * recorded when that QEMU was spawned; its checkpoint file says whether a
 * suspend finished and whether a resume passed its point of no return. A QEMU
 * that is not adopted here is killed by the engine's reclaim.
 */
async function recoverOne(host: RecoveryHost, rec: VmRecord): Promise<VmRef | undefined> {
  const { store, driver } = host;
  const ref = rec.slot === null ? undefined : await host.vms.ref(rec);
  const vm = ref && rec.pid !== null && rec.pidStartTime !== null ? await driver.adopt(ref, rec.pid, rec.pidStartTime, { appLog: null }) : undefined;
  const files = vmFiles(driver.vmDir(rec.id));
  const checkpoint = existsSync(files.checkpoint);
  const end = async (reason: string): Promise<undefined> => {
    if (vm) vm.beginStop();
    const t = await host.transition(rec, 'TERMINATING', reason, { idleDeadline: null, suspendedDeadline: null });
    if (t) await host.finishTerminate(t);
    return undefined;
  };
  /** The adopted QEMU is the VM: it runs on, whatever step it was stopped at. */
  const runOn = async (reason: string | null): Promise<VmRef | undefined> => {
    if (!vm || !ref) return undefined;
    host.vms.attach(rec, vm);
    if (!(await vm.queryStatus()).running) {
      // Stopped on its way in or out: it runs again, with the clock and entropy any restored guest gets.
      await vm.qmp.execute('cont');
      await Promise.all([vm.agent.setClock(), vm.agent.reseed()]);
    }
    rmSync(`${files.checkpoint}.consumed`, { force: true });
    const idleDeadline = host.activeNow(rec);
    if (rec.state === 'RUNNING') {
      const next = await store.patchVm(rec.id, rec.generation, { idleDeadline });
      if (next) host.arm(next);
    } else {
      await host.transition(rec, 'RUNNING', reason, { suspendedDeadline: null, checkpointBytes: 0, idleDeadline });
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
      const next = await store.patchVm(rec.id, rec.generation, patch);
      if (next) host.arm(next);
    } else {
      await host.transition(rec, 'SUSPENDED', null, { ...patch, ...checkpointed(driver, rec, 0), suspendedDeadline: host.suspendedDeadlineFor(rec) });
    }
    return ref;
  };
  switch (rec.state) {
    case 'PENDING':
      return end('cellad restarted before the VM finished starting');
    case 'TERMINATING':
      await host.finishTerminate(rec);
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
