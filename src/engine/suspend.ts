/**
 * Suspend (ADR 0001, 0009): the VM is stopped, the pages it wrote are found in
 * `/proc/PID/pagemap` (a private page over the image's `mem` mapping) and
 * copied from its memory into `checkpoint` beside its device state, saved
 * alone: every page it never wrote is left out, and never read. The image's
 * `mem` supplies those on resume.
 */
import { rmSync } from 'node:fs';
import { CellaError, isCellaError } from '../contract/index.js';
import { crashPoint } from '../host/index.js';
import { processJail } from '../vmm/index.js';
import type { EngineCore } from './core.js';
import { configurationSection, dirtyRuns, readHead, writeCheckpoint } from './checkpoint.js';
import { saveDevices, writeDurably } from './migrate.js';
import { dirtyPages } from './pagemap.js';
import { park } from './park.js';
import { startStandby } from './standby.js';
import { openSnapshot, snapshotFiles } from './snapshot.js';
import { vmFiles, type RunningVm } from './vm.js';

export interface SuspendResult {
  ms: number;
  /** Bytes written for the checkpoint (device state + dirty pages). */
  bytes: number;
  dirtyPages: number;
  totalPages: number;
  /** Milliseconds from the start to each step. */
  phases: Record<string, number>;
}

/** Saves a running VM to its folder and ends its QEMU (or parks it, with a resume window). */
export async function suspend(core: EngineCore, vm: RunningVm): Promise<SuspendResult> {
  const started = Date.now();
  const snap = openSnapshot(vm.ref.imageDir, core.fingerprint);
  const files = vmFiles(vm.dir);
  core.hosts.stop(vm.id, vm.qemu);
  const phases: Record<string, number> = {};
  const mark = (name: string): void => {
    phases[name] = Date.now() - started;
  };
  let devices: Promise<Buffer> | undefined;
  try {
    await vm.qmp.execute('stop');
    mark('stopped');
    crashPoint('suspend:stopped');
    const memPath = snapshotFiles(vm.ref.imageDir).mem;
    const sizeBytes = snap.memoryMiB * 1024 * 1024;
    const dirty = dirtyPages(vm.qemu.pid, memPath, sizeBytes);
    mark('pagemap');
    // QEMU saves its devices while the pages are copied: both only read the stopped VM.
    const saving = saveDevices(vm.qmp, processJail(vm.qemu.pid), files.devices).then((d) => {
      mark('devices');
      return d;
    });
    // Its failure is reported where it is awaited (writeCheckpoint), not as an unhandled rejection before that.
    saving.catch(() => {});
    devices = saving;
    const config = configurationSection(readHead(snapshotFiles(vm.ref.imageDir).devstate));
    const bytes = await writeDurably(files.checkpoint, (out) => writeCheckpoint(out, vm.qemu.pid, memPath, sizeBytes, dirtyRuns(dirty), config, saving));
    mark('synced');
    crashPoint('suspend:written');
    if (core.parkMs > 0 && !core.closing) {
      park(core, vm);
      mark('parked');
    } else {
      // Nothing is left to save: QEMU can simply go, and an empty one stands by for the resume.
      await vm.qemu.kill();
      mark('exited');
      startStandby(core, vm.ref);
    }
    let dirtyCount = 0;
    for (const d of dirty) dirtyCount += d;
    return { ms: Date.now() - started, bytes, dirtyPages: dirtyCount, totalPages: dirty.length, phases };
  } catch (err) {
    // A VM that failed to suspend (a full disk, say) runs on as it was; one that cannot is gone, and says why.
    // The device save is over first: `cont` must not race it.
    await devices?.catch(() => {});
    rmSync(files.checkpoint, { force: true });
    const why = (err as Error).message;
    if (
      vm.qemu.alive &&
      (await vm.qmp.execute('cont').then(
        () => true,
        () => false,
      ))
    ) {
      runOn(core, vm);
      throw new CellaError(
        isCellaError(err, 'INSUFFICIENT_CAPACITY') ? 'INSUFFICIENT_CAPACITY' : 'QEMU_FAILED',
        `suspend of ${vm.id} failed, it runs on: ${why}`,
        {
          cause: err,
          details: { stillRunning: true },
        },
      );
    }
    await vm.qemu.kill();
    throw new CellaError('QEMU_FAILED', `suspend of ${vm.id} failed: ${why}`, { cause: err });
  }
}

/** A suspend that failed left the VM running after all: a later exit is a crash again. */
function runOn(core: EngineCore, vm: RunningVm): void {
  const held = core.hosts.entry(vm.id);
  if (held?.state === 'stopping' && held.qemu === vm.qemu) core.hosts.write(vm.id, { ...held, state: 'running' });
}
