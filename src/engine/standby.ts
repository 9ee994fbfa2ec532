/**
 * Standby QEMUs (ADR 0010): once a suspended VM's QEMU is gone (at once, or
 * when its resume window ends), a new one is spawned empty for it in the
 * background, exactly as a restore spawns it (its namespace and tap, its
 * uid and chroot, its cgroup, its disk, `-incoming defer`) and connected,
 * then left waiting. A resume takes it and only loads the checkpoint, so
 * QEMU's start (about 150 ms under TCG here) is off its path. The guest
 * never ran in it: the checkpoint still holds the VM, so a crash at any
 * point leaves a QEMU that reclaim() kills like any restore cut short
 * (ADR 0007). At most `standbyMax` are kept, the oldest ended first.
 */
import { existsSync } from 'node:fs';
import { networkForSlot } from '../net/index.js';
import { spawnEmpty } from './clone.js';
import { vmDir, type EngineCore, type WarmVm } from './core.js';
import { dispose } from './helpers.js';
import { openSnapshot } from './snapshot.js';
import { vmFiles, type VmRef } from './vm.js';

/** Starts a standby QEMU for suspended VM `ref` in the background, within the budget; failures are logged, a resume then restores cold. */
export function startStandby(core: EngineCore, ref: VmRef): void {
  if (core.standbyMax === 0 || core.closing || core.standbyJobs.has(ref.id) || core.hosts.entry(ref.id)) return;
  const job = makeStandby(core, ref)
    .catch((err: Error) => core.log(`standby QEMU for ${ref.id}: ${err.message}`))
    .finally(() => core.standbyJobs.delete(ref.id));
  core.standbyJobs.set(ref.id, job);
}

/** Waits for the standby of `id` in the making, if any (a resume or terminate of that VM comes). */
export async function settleStandby(core: EngineCore, id: string): Promise<void> {
  await core.standbyJobs.get(id);
}

/** Ends the standby QEMU of `name`, if it has one. */
export async function endStandby(core: EngineCore, name: string): Promise<void> {
  const standby = core.hosts.standby(name);
  if (!standby) return;
  core.hosts.write(name, undefined);
  standby.detach();
  await dispose(standby);
}

/** Ends every standby QEMU, after those in the making (the engine is closing, so no more are started). */
export async function endAllStandbys(core: EngineCore): Promise<void> {
  await Promise.allSettled([...core.standbyJobs.values()]);
  await Promise.all(core.hosts.allStandby().map((name) => endStandby(core, name)));
}

/** Takes the standby of `id` for its resume, which holds its QEMU from now on (a 'restoring' entry). */
export function takeStandby(core: EngineCore, id: string): WarmVm | undefined {
  const standby = core.hosts.standby(id);
  if (!standby) return undefined;
  core.hosts.write(id, { state: 'restoring', qemu: standby.qemu });
  standby.detach();
  return standby;
}

async function makeStandby(core: EngineCore, ref: VmRef): Promise<void> {
  // The budget: the oldest go first, so the VMs suspended last resume fastest.
  const kept = core.hosts.allStandby();
  for (const name of kept.slice(0, Math.max(kept.length - core.standbyMax + 1, 0))) await endStandby(core, name);
  const dir = vmDir(core, ref.id);
  // Terminated (or resumed) meanwhile: nothing to wait for.
  if (core.closing || core.hosts.entry(ref.id) || !existsSync(vmFiles(dir).checkpoint)) return;
  const snap = openSnapshot(ref.imageDir, core.fingerprint);
  core.hosts.begin(ref.id, 'restoring');
  try {
    // Its app output has nowhere to go until the resume says where.
    const r = await spawnEmpty(core, { name: ref.id, dir, imageDir: ref.imageDir, snap, net: networkForSlot(ref.slot), appLog: null });
    const standby: WarmVm = { ...r, detach: () => {} };
    const onExit = (): void => {
      if (core.hosts.exited(ref.id, r.qemu)) void dispose(standby);
    };
    r.qemu.once('exit', onExit);
    standby.detach = () => r.qemu.removeListener('exit', onExit);
    core.hosts.write(ref.id, { state: 'standby', qemu: r.qemu, standby });
  } finally {
    core.hosts.settle(ref.id);
  }
}
