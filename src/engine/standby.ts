/**
 * Standby QEMUs (ADR 0011): once a suspended VM's QEMU is gone (at once, or
 * when its resume window ends), a new one is spawned empty for it in the
 * background, exactly as a restore spawns it (its namespace and tap, its
 * uid and chroot, its cgroup, its disk, `-incoming defer`) and connected,
 * then left waiting. A resume takes it and only loads the checkpoint, so
 * QEMU's start (about 150 ms under TCG here) is off its path. The guest
 * never ran in it: the checkpoint still holds the VM, so a crash at any
 * point leaves a QEMU that reclaim() kills like any restore cut short
 * (ADR 0007). At most `standbyMax` are kept, the oldest ended first.
 *
 * Within `standbyPreloadBytes` (all standbys together), the checkpoint's
 * pages are also written into the standby in advance: the resume then only
 * loads the device state. That RAM (the pages the VM dirtied) is held while
 * it stays suspended: a trade of host memory for latency, bounded here.
 */
import { existsSync, statSync } from 'node:fs';
import { networkForSlot } from '../net/index.js';
import { checkpointLayout, restorePages } from './checkpoint.js';
import { spawnEmpty } from './clone.js';
import { vmDir, type EngineCore, type WarmVm } from './core.js';
import { dispose } from './helpers.js';
import { openSnapshot, snapshotFiles } from './snapshot.js';
import { vmFiles, type VmRef } from './vm.js';

/** Starts a standby QEMU for suspended VM `ref` in the background, within the budget; failures are logged, a resume then restores cold. */
export function startStandby(core: EngineCore, ref: VmRef): void {
  if (core.standbyMax === 0 || core.closing || core.standbyJobs.has(ref.id) || core.hosts.entry(ref.id)) return;
  const job = makeStandby(core, ref)
    .catch((err: Error) => core.log(`standby QEMU for ${ref.id}: ${err.message}`))
    .finally(() => core.standbyJobs.delete(ref.id));
  core.standbyJobs.set(ref.id, job);
}

/**
 * After a restart, which ended the standbys an earlier cellad made: new ones
 * for the suspended VMs among `refs` (a checkpoint, no QEMU here), those
 * suspended last (their checkpoint's mtime) within the bound. One at a time,
 * oldest first, so the bound ends them in suspend order, as it would have.
 */
export function restartStandbys(core: EngineCore, refs: Iterable<VmRef>): void {
  if (core.standbyMax === 0) return;
  const suspended = [...refs]
    .flatMap((ref) => {
      const st = core.hosts.entry(ref.id) ? undefined : statSync(vmFiles(vmDir(core, ref.id)).checkpoint, { throwIfNoEntry: false });
      return st ? [{ ref, at: st.mtimeMs }] : [];
    })
    .sort((a, b) => a.at - b.at)
    .slice(-core.standbyMax);
  void (async () => {
    for (const { ref } of suspended) {
      startStandby(core, ref);
      await settleStandby(core, ref.id);
    }
  })();
}

/** Waits for the standby of `id` in the making, if any (a resume or terminate of that VM comes). */
export async function settleStandby(core: EngineCore, id: string): Promise<void> {
  await core.standbyJobs.get(id);
}

/** Ends the standby QEMU of `name`, if it has one. */
export async function endStandby(core: EngineCore, name: string): Promise<void> {
  const held = core.hosts.standby(name);
  if (!held) return;
  core.hosts.write(name, undefined);
  held.standby.detach();
  await dispose(held.standby);
}

/** Ends every standby QEMU, after those in the making (the engine is closing, so no more are started). */
export async function endAllStandbys(core: EngineCore): Promise<void> {
  await Promise.allSettled([...core.standbyJobs.values()]);
  await Promise.all(core.hosts.allStandby().map(({ name }) => endStandby(core, name)));
}

/** Takes the standby of `id` for its resume, which holds its QEMU from now on (a 'restoring' entry); `preloaded`: its pages are in. */
export function takeStandby(core: EngineCore, id: string): { standby: WarmVm; preloaded: boolean } | undefined {
  const held = core.hosts.standby(id);
  if (!held) return undefined;
  core.hosts.write(id, { state: 'restoring', qemu: held.qemu });
  held.standby.detach();
  return { standby: held.standby, preloaded: held.preloadedBytes > 0 };
}

async function makeStandby(core: EngineCore, ref: VmRef): Promise<void> {
  // The budget: the oldest go first, so the VMs suspended last resume fastest.
  const kept = core.hosts.allStandby();
  for (const { name } of kept.slice(0, Math.max(kept.length - core.standbyMax + 1, 0))) await endStandby(core, name);
  const dir = vmDir(core, ref.id);
  // Terminated (or resumed) meanwhile: nothing to wait for.
  if (core.closing || core.hosts.entry(ref.id) || !existsSync(vmFiles(dir).checkpoint)) return;
  const snap = openSnapshot(ref.imageDir, core.fingerprint);
  core.hosts.begin(ref.id, 'restoring');
  try {
    // Its app output has nowhere to go until the resume says where.
    const r = await spawnEmpty(core, { name: ref.id, dir, imageDir: ref.imageDir, snap, net: networkForSlot(ref.slot), appLog: null });
    let preloadedBytes = 0;
    try {
      preloadedBytes = await preload(core, r.qemu.pid, vmFiles(dir).checkpoint, ref.imageDir, snap.memoryMiB);
    } catch (err) {
      await dispose(r);
      throw err;
    }
    const standby: WarmVm = { ...r, detach: () => {} };
    const onExit = (): void => {
      if (core.hosts.exited(ref.id, r.qemu)) void dispose(standby);
    };
    r.qemu.once('exit', onExit);
    standby.detach = () => r.qemu.removeListener('exit', onExit);
    core.hosts.write(ref.id, { state: 'standby', qemu: r.qemu, standby, preloadedBytes });
  } finally {
    core.hosts.settle(ref.id);
  }
}

/** Writes the checkpoint's pages into standby QEMU `pid` if they fit the budget left; the bytes it now holds for them (0: none). */
async function preload(core: EngineCore, pid: number, checkpoint: string, imageDir: string, memoryMiB: number): Promise<number> {
  const layout = checkpointLayout(checkpoint);
  // The device stream starts after the pages: its offset bounds their size.
  const bytes = layout.pages ? layout.start : 0;
  const used = core.hosts.allStandby().reduce((sum, { entry }) => sum + entry.preloadedBytes, 0);
  if (bytes === 0 || used + bytes > core.standbyPreloadBytes) return 0;
  await restorePages(checkpoint, pid, snapshotFiles(imageDir).mem, memoryMiB * 1024 * 1024);
  return bytes;
}
