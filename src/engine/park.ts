/**
 * The resume window (ADR 0004): after a suspend has written its checkpoint,
 * the stopped QEMU is kept for `parkMs`, so a resume within it is a `cont`
 * (resume.ts) instead of a restore. The checkpoint is complete either way;
 * when the window ends only the QEMU's RAM is freed.
 */
import type { EngineCore } from './core.js';
import { startStandby } from './standby.js';
import type { RunningVm } from './vm.js';

/** Parks `vm`, which a suspend is stopping; its timer ends with the parked state (host.ts). */
export function park(core: EngineCore, vm: RunningVm): void {
  const timer = setTimeout(() => {
    if (core.hosts.parked(vm.id)?.qemu === vm.qemu) void endParked(core, vm.id).then(() => startStandby(core, vm.ref));
  }, core.parkMs);
  timer.unref();
  try {
    core.hosts.write(vm.id, { state: 'parked', qemu: vm.qemu, vm, timer });
  } catch (err) {
    clearTimeout(timer);
    throw err;
  }
}

/** Ends the parked QEMU of `name`, if there is one: its checkpoint holds everything. */
export async function endParked(core: EngineCore, name: string): Promise<void> {
  const parked = core.hosts.parked(name);
  if (!parked) return;
  core.hosts.write(name, undefined);
  await parked.qemu.kill();
}
