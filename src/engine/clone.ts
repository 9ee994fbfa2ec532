/**
 * Clones: a QEMU restored from a snapshot's device state (or a checkpoint)
 * with the image's `mem` mapped MAP_PRIVATE, then run under its own identity
 * and supervised. A launch takes a warm clone when its image has one ready
 * (pool.ts), else restores one cold.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { AgentClient } from '../agent/index.js';
import { CellaError } from '../contract/index.js';
import { copyOverlay } from '../disk/index.js';
import { crashPoint } from '../host/index.js';
import { applyPolicy, type NetworkPolicy, type VmNetwork } from '../net/index.js';
import { QmpClient, type ExitInfo, type QemuProcess } from '../vmm/index.js';
import { vmDir, type EngineCore, type Restored } from './core.js';
import { appLogFile, checkSocketPaths, dispose, identify, mark, type StartOptions } from './helpers.js';
import { checkpointLayout, restorePages } from './checkpoint.js';
import { loadState } from './migrate.js';
import { openSnapshot, snapshotFiles, type SnapshotManifest } from './snapshot.js';
import { baseSpec, spawnQemu, vmJailFor } from './spawn.js';
import { AppLog, RunningVm, vmFiles, type BlockIoError, type VmRef } from './vm.js';

export interface LaunchOptions extends StartOptions {
  fromPool?: boolean;
  network?: NetworkPolicy;
}

/**
 * Launches a new VM `id` from the snapshot in `image`: from the image's warm
 * pool when it has a clone ready (unless `fromPool` is false), else cold.
 */
export async function launch(core: EngineCore, image: string, id: string, opts: LaunchOptions): Promise<RunningVm> {
  const imageDir = path.resolve(image);
  const snap = openSnapshot(imageDir, core.fingerprint);
  if (id.startsWith('.')) throw new CellaError('INVALID_ARGUMENT', `VM id ${id} must not start with a dot`);
  const dir = vmDir(core, id);
  try {
    mkdirSync(dir);
  } catch {
    throw new CellaError('INVALID_STATE', `VM ${id} already exists`);
  }
  checkSocketPaths(vmFiles(dir));
  const appLog = appLogFile(dir, opts);
  core.hosts.begin(id, 'restoring');
  const warm = opts.fromPool === false ? undefined : core.hosts.takeWarm(imageDir);
  let net: VmNetwork | undefined = warm?.net;
  let r: Restored | undefined;
  try {
    if (warm) {
      core.hosts.hold(id, warm.qemu);
      warm.detach();
      // Replaces the empty directory claimed above; open files and sockets move with it.
      renameSync(warm.dir, dir);
      try {
        warm.qemu.cgroup?.rename(id);
      } catch (err) {
        // Its limits hold all the same; only the cgroup's name is off, and reclaim() spares a cgroup in use.
        core.log(`VM ${id}: cgroup not renamed: ${(err as Error).message}`);
      }
      warm.appLog.setFile(appLog);
      warm.t0 = performance.now();
      warm.phases = {};
      r = { ...warm, dir };
      opts.onSpawn?.(warm.qemu.pid, warm.qemu.startTime);
    } else {
      r = await restoreClone(core, id, dir, imageDir, snap, appLog, opts.onSpawn);
      net = r.net;
    }
    // Before the guest runs under its identity: it never sees a network wider than its own.
    if (opts.network) await applyPolicy(r.net, opts.network);
    return await activate(core, { id, imageDir, slot: r.net.slot }, r, warm !== undefined);
  } catch (err) {
    // The QEMU it restored or took from the pool goes with it (activate may have ended it already).
    const held = r ?? warm;
    if (held) await dispose(held);
    if (net) await core.networks.release(net).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  } finally {
    core.hosts.settle(id);
  }
}

/** A new clone of the image in `dir`: its own overlay and namespace, state loaded, paused. */
export async function restoreClone(
  core: EngineCore,
  name: string,
  dir: string,
  imageDir: string,
  snap: SnapshotManifest,
  appLog: string | null,
  onSpawn?: StartOptions['onSpawn'],
): Promise<Restored> {
  copyOverlay(snapshotFiles(imageDir).overlay, vmFiles(dir).disk);
  const net = await core.networks.acquire();
  try {
    const r = await restore(core, { name, dir, imageDir, snap, net, stateFile: snapshotFiles(imageDir).devstate, appLog, kind: 'launch', onSpawn });
    crashPoint('launch:loaded');
    return r;
  } catch (err) {
    await core.networks.release(net).catch(() => {});
    throw err;
  }
}

export interface RestoreSpec {
  /** The VM's name for QEMU; its folder is `dir`. */
  name: string;
  dir: string;
  imageDir: string;
  snap: SnapshotManifest;
  net: VmNetwork;
  /** The snapshot's device state, or a VM's checkpoint. */
  stateFile: string;
  appLog: string | null;
  kind: 'launch' | 'resume';
  onSpawn?: StartOptions['onSpawn'] | undefined;
}

/** Spawns QEMU in `net` and loads `stateFile` into it; the VM is left paused. */
export async function restore(core: EngineCore, spec: RestoreSpec): Promise<Restored> {
  const r = await spawnEmpty(core, spec, (qemu) => {
    spec.onSpawn?.(qemu.pid, qemu.startTime);
    crashPoint(spec.kind === 'launch' ? 'launch:spawned' : 'resume:spawned');
  });
  return loadInto(core, r, spec);
}

/**
 * A QEMU for `spec`'s VM that waits for its state (`-incoming defer`, paused), its
 * QMP, control and log ports connected: all of a restore but the load. Ended on failure.
 */
export async function spawnEmpty(
  core: EngineCore,
  spec: Omit<RestoreSpec, 'stateFile' | 'kind' | 'onSpawn'>,
  /** Runs the moment the QEMU exists (to record it), before anything waits on it. */
  spawned: (qemu: QemuProcess) => void = () => {},
): Promise<Restored> {
  const { dir, net } = spec;
  const files = vmFiles(dir);
  const t0 = performance.now();
  const phases: Record<string, number> = {};
  // A socket file left by an earlier QEMU of this folder must not answer for the new one.
  for (const f of [files.qmp, files.ctl, files.log]) rmSync(f, { force: true });
  const qemu = await spawnQemu(
    core,
    {
      ...baseSpec(core, spec.name, spec.snap.memoryMiB, spec.snap.vcpus),
      memPath: snapshotFiles(spec.imageDir).mem,
      memShared: false,
      disk: files.disk,
      qmpSocket: files.qmp,
      ctlSocket: files.ctl,
      logSocket: files.log,
      consoleLog: files.console,
      incoming: true,
    },
    { name: path.basename(dir), net, jail: vmJailFor(core, net, dir), outliveParent: core.outliveParent },
  );
  const r: Partial<Restored> & Pick<Restored, 'qemu'> = { dir, net, qemu, t0, phases };
  try {
    spawned(qemu);
    r.qmp = await QmpClient.connect(files.qmp, 10_000, () => qemu.alive);
    mark(r as Restored, 'qmp');
    // Connect the guest's ports before its state loads: the snapshot says "host
    // connected", and a port seen closed on restore costs the agent a reconnect.
    [r.agent, r.appLog] = await Promise.all([AgentClient.connect(files.ctl), AppLog.connect(files.log, spec.appLog)]);
    return r as Restored;
  } catch (err) {
    await dispose(r);
    throw err;
  }
}

/** Loads `spec.stateFile` into `r` (from spawnEmpty), which is left paused; ended on failure. */
export async function loadInto(
  core: EngineCore,
  r: Restored,
  spec: Pick<RestoreSpec, 'imageDir' | 'snap' | 'stateFile' | 'kind' | 'net' | 'dir'>,
  /** The checkpoint's pages are in its RAM already (a preloaded standby). */
  pagesIn = false,
): Promise<Restored> {
  const { qemu } = r;
  try {
    // A checkpoint of dirty pages (checkpoint.ts): the pages go into RAM first, then the devices that refer to it load.
    const layout = spec.kind === 'resume' ? checkpointLayout(spec.stateFile) : { pages: false, start: 0 };
    if (layout.pages && !pagesIn) {
      await restorePages(spec.stateFile, qemu.pid, snapshotFiles(spec.imageDir).mem, spec.snap.memoryMiB * 1024 * 1024);
      mark(r, 'pages');
    }
    await loadState(r.qmp, qemu, vmJailFor(core, spec.net, spec.dir), vmFiles(spec.dir).incoming, spec.stateFile, layout);
    mark(r, 'loaded');
    return r;
  } catch (err) {
    await dispose(r);
    throw err;
  }
}

/**
 * Runs a restored VM under its final identity and starts supervising it.
 * `neverRan` is called when `cont` fails, so the guest never ran (a resume
 * gives its checkpoint back).
 */
export async function activate(core: EngineCore, ref: VmRef, r: Restored, pooled: boolean, neverRan?: () => void): Promise<RunningVm> {
  try {
    await r.qmp.execute('cont');
  } catch (err) {
    await dispose(r);
    neverRan?.();
    throw err;
  }
  mark(r, 'running');
  try {
    await identify(r, ref.id);
  } catch (err) {
    await dispose(r);
    throw err;
  }
  return supervise(core, new RunningVm(ref, r.dir, r.net, r.qemu, r.qmp, r.agent, r.appLog, core.hosts.handle(ref.id, r.qemu), r.phases, pooled));
}

/** The VM's operation is done: from now on it runs, and its exit is watched. */
export function supervise(core: EngineCore, vm: RunningVm): RunningVm {
  core.hosts.write(vm.id, { state: 'running', qemu: vm.qemu, vm });
  vm.on('io-error', (data: BlockIoError) => core.events.emit('vm-io-error', vm.id, data));
  vm.once('exit', (info: ExitInfo & { expected: boolean }) => {
    core.hosts.exited(vm.id, vm.qemu);
    if (!info.expected) core.log(`VM ${vm.id}: QEMU ended unexpectedly: ${vm.qemu.describeExit()}`);
    core.events.emit('vm-exit', vm.id, info);
  });
  return vm;
}
