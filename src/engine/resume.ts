/**
 * Bringing a suspended VM back: continued in place when its stopped QEMU is
 * still parked (park.ts), else restored from its checkpoint. Crash-safe
 * (ADR 0007): the checkpoint stays untouched while a QEMU loads it (a
 * half-done restore is killed and redone); it is consumed, by a durable
 * rename, just before the guest runs again, because from then on its disk
 * moves ahead of it.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { CellaError } from '../contract/index.js';
import { crashPoint } from '../host/index.js';
import { networkForSlot } from '../net/index.js';
import { activate, loadInto, restore, type RestoreSpec } from './clone.js';
import { vmDir, type EngineCore, type Restored } from './core.js';
import { appLogFile, dispose, type StartOptions } from './helpers.js';
import { openSnapshot } from './snapshot.js';
import { takeStandby } from './standby.js';
import { vmFiles, type RunningVm, type VmRef } from './vm.js';

type VmFiles = ReturnType<typeof vmFiles>;

export async function resume(core: EngineCore, ref: VmRef, opts: StartOptions): Promise<RunningVm> {
  const held = core.hosts.entry(ref.id);
  if (held && held.state !== 'parked' && held.state !== 'standby') {
    throw new CellaError('INVALID_STATE', `VM ${ref.id} is ${held.state === 'stopping' ? 'running' : held.state}`);
  }
  const snap = openSnapshot(ref.imageDir, core.fingerprint);
  const dir = vmDir(core, ref.id);
  const files = vmFiles(dir);
  try {
    statSync(files.checkpoint);
  } catch {
    throw new CellaError('INVALID_STATE', `VM ${ref.id} has no checkpoint to resume from`);
  }
  const parked = core.hosts.parked(ref.id);
  if (parked) return unpark(core, ref.id, parked.vm, opts);
  const standby = takeStandby(core, ref.id);
  if (!standby) core.hosts.begin(ref.id, 'restoring');
  try {
    const spec = {
      name: ref.id,
      dir,
      imageDir: ref.imageDir,
      snap,
      net: networkForSlot(ref.slot),
      stateFile: files.checkpoint,
      appLog: appLogFile(dir, opts),
      kind: 'resume',
      onSpawn: opts.onSpawn,
    } as const;
    const r = standby ? await fromStandby(core, standby.standby, standby.preloaded, spec) : await restore(core, spec);
    crashPoint('resume:loaded');
    await commitResume(r, files);
    crashPoint('resume:committed');
    // A `cont` that fails gives the checkpoint back: the guest never ran.
    const vm = await activate(core, ref, r, false, () => renameSync(consumedCheckpoint(files), files.checkpoint));
    crashPoint('resume:running');
    rmSync(consumedCheckpoint(files), { force: true });
    return vm;
  } finally {
    core.hosts.settle(ref.id);
  }
}

/** Loads the checkpoint into the VM's standby QEMU (standby.ts), which waited, spawned and connected. */
async function fromStandby(core: EngineCore, standby: Restored, preloaded: boolean, spec: RestoreSpec): Promise<Restored> {
  standby.t0 = performance.now();
  standby.phases = {};
  standby.appLog.setFile(spec.appLog);
  try {
    spec.onSpawn?.(standby.qemu.pid, standby.qemu.startTime);
    crashPoint('resume:spawned');
  } catch (err) {
    await dispose(standby);
    throw err;
  }
  return loadInto(core, standby, spec, preloaded);
}

/** Continues a parked VM's stopped QEMU, with the same point of no return as a restore. */
async function unpark(core: EngineCore, id: string, vm: RunningVm, opts: StartOptions): Promise<RunningVm> {
  core.hosts.write(id, { state: 'restoring', qemu: vm.qemu });
  try {
    const files = vmFiles(vm.dir);
    opts.onSpawn?.(vm.qemu.pid, vm.qemu.startTime);
    await commitResume(vm, files);
    crashPoint('resume:committed');
    try {
      await vm.qmp.execute('cont');
    } catch (err) {
      // The guest never ran: its checkpoint still holds it.
      await vm.qemu.kill();
      renameSync(consumedCheckpoint(files), files.checkpoint);
      throw new CellaError('QEMU_FAILED', `resume of ${id} in place failed: ${(err as Error).message}`, { cause: err });
    }
    try {
      // The VM never left: only its clock moved on. Its entropy is topped up as after any restore.
      await Promise.all([vm.agent.setClock(), vm.agent.reseed()]);
    } catch (err) {
      await vm.qemu.kill();
      throw new CellaError('QEMU_FAILED', `resume of ${id} in place failed after the guest ran: ${(err as Error).message}`, { cause: err });
    }
    if (!vm.qemu.alive) throw new CellaError('QEMU_EXITED', `VM ${id} ended while it was parked: ${vm.qemu.describeExit()}`);
    core.hosts.write(id, { state: 'running', qemu: vm.qemu, vm });
    crashPoint('resume:running');
    rmSync(consumedCheckpoint(files), { force: true });
    return vm;
  } finally {
    core.hosts.settle(id);
  }
}

/**
 * The point of no return of a resume: the checkpoint is renamed away
 * (durably) before the guest may run, so a restarted cellad that finds no
 * checkpoint knows the QEMU it finds is the VM, and one that finds the
 * checkpoint knows any QEMU it finds never ran and may be killed.
 */
async function commitResume(r: Pick<Restored, 'qemu'> & Partial<Restored>, files: VmFiles): Promise<void> {
  try {
    renameSync(files.checkpoint, consumedCheckpoint(files));
    syncDir(path.dirname(files.checkpoint));
  } catch (err) {
    await dispose(r);
    throw new CellaError('QEMU_FAILED', `the checkpoint of ${path.basename(path.dirname(files.checkpoint))} could not be taken: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Where a resume moves the checkpoint just before the guest runs again (see commitResume). */
function consumedCheckpoint(files: VmFiles): string {
  return `${files.checkpoint}.consumed`;
}

/** Makes a rename or unlink in `dir` durable. */
function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
