/**
 * The microVM engine: boot a template VM and capture an image snapshot,
 * launch clones from it, suspend them to disk, resume them, terminate them.
 *
 * RAM: the template runs on a MAP_SHARED file (`mem`) and is captured with
 * x-ignore-shared, so only device state is written. Clones map `mem`
 * MAP_PRIVATE: pages come lazily from the shared page cache, writes are
 * private. A suspend writes device state plus only the pages the clone wrote.
 * Disk: every VM has its own qcow2 overlay on the image's disk.
 *
 * This class is the engine's only door; each operation lives in its own file
 * (template, builder, clone, pool, suspend, park, resume, adopt), all of them
 * sharing one EngineCore (core.ts) whose host state (host.ts) says what this
 * process holds in each VM folder. Every QEMU starts through spawn.ts.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, realpathSync, rmSync } from 'node:fs';
import path from 'node:path';
import { crashPoint, run } from '../host/index.js';
import { NetworkPool, applyPolicy, networkForSlot, type NetworkPolicy } from '../net/index.js';
import { loadGuestArtifacts, type GuestArtifacts } from '../setup/index.js';
import { Cgroups, QEMU_BINARY, SpawnServer, detectAccel, requireExecutable, type AccelInfo, type QemuProcess } from '../vmm/index.js';
import { adopt, killQemusIn, reclaim, type ReclaimResult } from './adopt.js';
import { startBuilder, type BuilderSpec, type BuilderVm } from './builder.js';
import { launch, type LaunchOptions } from './clone.js';
import type { EngineCore, WarmVm } from './core.js';
import type { AppLogOption, StartOptions } from './helpers.js';
import { HostTable } from './host.js';
import { endParked } from './park.js';
import { endAllStandbys, endStandby, restartStandbys, settleStandby } from './standby.js';
import { WarmPool, type WarmUp } from './pool.js';
import { resume } from './resume.js';
import { sha256, type SnapshotManifest } from './snapshot.js';
import { deviceModel } from './spawn.js';
import { suspend, type SuspendResult } from './suspend.js';
import { createSnapshot, type SnapshotSpec } from './template.js';
import type { RunningVm, VmRef } from './vm.js';

export { RunningVm, AppLog, vmFiles, type BlockIoError, type VmRef } from './vm.js';
export { BuilderVm, BUILD_MOUNT, type BuilderSpec } from './builder.js';
export { openSnapshot, snapshotFiles, type SnapshotManifest } from './snapshot.js';
export { filterMigrationStream, type FilterStats } from './migration-stream.js';
export { processStartTime } from '../vmm/index.js';
export { waitPort, type AppLogOption, type StartOptions } from './helpers.js';
export type { ReclaimResult } from './adopt.js';
export type { WarmUp } from './pool.js';
export type { SnapshotSpec } from './template.js';
export type { SuspendResult } from './suspend.js';

export interface EngineOptions {
  /** Holds vms/<id>/. */
  dataDir: string;
  guestDir?: string;
  /** Force an accelerator instead of probing. */
  accel?: 'kvm' | 'tcg';
  /** QEMU binary (default: CELLA_QEMU or /usr/bin/qemu-system-x86_64). */
  qemuBinary?: string;
  /** Network namespaces kept ready for launches. */
  warmNetworks?: number;
  /** Paused, pre-restored clones kept ready per launched image (0 disables). */
  warmClones?: number;
  /**
   * Every QEMU started runs on if this process dies, for a restarted cellad to
   * adopt (see `adopt`, `reclaim`, `close({ keepRunning })`); its stderr goes to
   * `qemu.log` in the VM folder. Default false: QEMU dies with this process.
   */
  outliveParent?: boolean;
  /**
   * After a suspend has written its checkpoint, the stopped QEMU is kept for
   * this long (default 0): a resume within it is a `cont` instead of a restore.
   * The checkpoint is complete either way; only the host RAM is freed later.
   */
  parkSeconds?: number;
  /**
   * Suspended VMs (the most recently suspended first) that get a standby QEMU
   * once their own is gone: spawned empty, jailed and connected, so their
   * resume only loads the checkpoint (standby.ts). Each costs an idle QEMU
   * without guest RAM. Default 0.
   */
  standbyQemus?: number;
  /**
   * MiB of checkpoint pages that standby QEMUs may hold, all together: a
   * standby whose VM's dirtied pages fit is given them in advance, and its
   * resume only loads the device state. Host RAM traded for latency. Default 0.
   */
  standbyPreloadMiB?: number;
  log?: (line: string) => void;
}

/** Events: 'vm-exit' (id, ExitInfo & {expected}) whenever a VM's QEMU ends; 'vm-io-error' (id, BlockIoError). */
export class Engine extends EventEmitter {
  private readonly core: EngineCore;
  private readonly pool: WarmPool;
  /**
   * The tag on this data directory's network namespaces (namespaceOwner in
   * src/net): a restarted engine tells its own from those of engines of other
   * data directories, which it leaves alone.
   */
  readonly networkTag: string;

  private constructor(
    readonly dataDir: string,
    readonly guest: GuestArtifacts,
    readonly accel: AccelInfo,
    /** Snapshots carry it; a launch refuses a snapshot made by anything else. */
    readonly fingerprint: string,
    spawner: SpawnServer,
    opts: Required<
      Pick<EngineOptions, 'log' | 'qemuBinary' | 'warmNetworks' | 'warmClones' | 'outliveParent' | 'parkSeconds' | 'standbyQemus' | 'standbyPreloadMiB'>
    >,
  ) {
    super();
    const tag = sha256(Buffer.from(dataDir)).slice(0, 16);
    this.networkTag = `cella-owner:${tag}`;
    const namespaces = { tag: this.networkTag, intentDir: path.join(dataDir, 'netns') };
    const jailed = process.getuid?.() === 0;
    this.core = {
      dataDir,
      guest,
      accel,
      fingerprint,
      spawner,
      log: opts.log,
      qemuBinary: opts.qemuBinary,
      outliveParent: opts.outliveParent,
      jailed,
      networks: new NetworkPool(opts.warmNetworks, namespaces, guest.netd),
      namespaces,
      cgroups: Cgroups.open(`cella/${tag}`, opts.log),
      hosts: new HostTable<QemuProcess, RunningVm, WarmVm>(),
      builderUids: new Set(),
      parkMs: opts.parkSeconds * 1000,
      standbyMax: opts.standbyQemus,
      standbyJobs: new Map(),
      standbyPreloadBytes: opts.standbyPreloadMiB * 1024 * 1024,
      closing: false,
      events: this,
    };
    this.pool = new WarmPool(this.core, opts.warmClones);
    if (!jailed) opts.log('not running as root: QEMU runs as this user, without its own uid or chroot');
  }

  static async open(opts: EngineOptions): Promise<Engine> {
    const log = opts.log ?? ((line: string) => process.stderr.write(`cella: ${line}\n`));
    const qemuBinary = opts.qemuBinary ?? QEMU_BINARY;
    requireExecutable(qemuBinary, 'QEMU (qemu-system-x86_64)');
    const guest = loadGuestArtifacts(opts.guestDir);
    // Started first, while this process is small: the spawn server forks every QEMU after (ADR 0012).
    const spawner = new SpawnServer(guest.spawner);
    try {
      return await Engine.start(opts, log, qemuBinary, guest, spawner);
    } catch (err) {
      spawner.close();
      throw err;
    }
  }

  private static async start(
    opts: EngineOptions,
    log: (line: string) => void,
    qemuBinary: string,
    guest: GuestArtifacts,
    spawner: SpawnServer,
  ): Promise<Engine> {
    const qemuVersion = (await run(qemuBinary, ['--version'])).split('\n')[0] ?? '';
    const accel = await detectAccel({
      kernel: guest.kernel,
      initrd: guest.initrd,
      spawner,
      cacheFile: path.join(guest.dir, 'accel.json'),
      cacheKey: `${qemuVersion}:${guest.manifest.vmlinuxSha256}`,
      force: opts.accel,
      qemuBinary,
    });
    log(`accelerator: ${accel.reason}`);
    const fingerprint = sha256(
      Buffer.from(
        JSON.stringify({
          qemuVersion,
          vmlinux: guest.manifest.vmlinuxSha256,
          initrd: guest.manifest.initrdSha256,
          accel: accel.accel,
          ...deviceModel(accel.accel),
        }),
      ),
    );
    mkdirSync(path.join(opts.dataDir, 'vms'), { recursive: true });
    // The real path: reclaim() and adopt() match it against the paths /proc shows.
    const dataDir = realpathSync(opts.dataDir);
    const engine = new Engine(dataDir, guest, accel, fingerprint, spawner, {
      log,
      qemuBinary,
      warmNetworks: opts.warmNetworks ?? 2,
      warmClones: opts.warmClones ?? 1,
      outliveParent: opts.outliveParent ?? false,
      parkSeconds: opts.parkSeconds ?? 0,
      standbyQemus: opts.standbyQemus ?? 0,
      standbyPreloadMiB: opts.standbyPreloadMiB ?? 0,
    });
    await engine.core.networks.prewarm();
    return engine;
  }

  vmDir(id: string): string {
    return path.join(this.dataDir, 'vms', id);
  }

  get(id: string): RunningVm | undefined {
    return this.core.hosts.running(id);
  }

  list(): RunningVm[] {
    return this.core.hosts.allRunning();
  }

  /** Boots a template VM from `spec.rootfs`, starts the app and captures the snapshot once it is ready (template.ts). */
  createSnapshot(spec: SnapshotSpec): Promise<SnapshotManifest> {
    return createSnapshot(this.core, spec);
  }

  /** Boots a builder VM on `spec.top` (see BuilderVm); a build is never adopted by a restarted cellad. */
  startBuilder(spec: BuilderSpec): Promise<BuilderVm> {
    return startBuilder(this.core, spec);
  }

  /**
   * Launches a new VM `id` from the snapshot in `image`: from the image's warm
   * pool when it has a clone ready (unless `fromPool` is false), else cold.
   */
  async launch(image: string, id: string, opts: LaunchOptions = {}): Promise<RunningVm> {
    const vm = await launch(this.core, image, id, opts);
    this.pool.refill(image);
    return vm;
  }

  /**
   * Brings a suspended VM back: continued in place within the resume window,
   * else restored from its checkpoint, which is consumed just before the
   * guest runs again (ADR 0007; resume.ts).
   */
  async resume(ref: VmRef, opts: StartOptions = {}): Promise<RunningVm> {
    await settleStandby(this.core, ref.id);
    return resume(this.core, ref, opts);
  }

  /** Waits until the standby QEMU of suspended VM `ref` is ready (or failed), if one is being made. */
  standbyReady(ref: VmRef): Promise<void> {
    return settleStandby(this.core, ref.id);
  }

  /** After a restart (and reclaim()): standby QEMUs again for the suspended VMs among `refs` suspended last, in the background (standby.ts). */
  restartStandbys(refs: Iterable<VmRef>): void {
    restartStandbys(this.core, refs);
  }

  /** Saves a running VM to its folder and ends its QEMU (or parks it for the resume window); resume() brings it back. */
  suspend(vm: RunningVm): Promise<SuspendResult> {
    return suspend(this.core, vm);
  }

  /**
   * Makes sure a suspended VM's namespace exists, with `policy` in it when it
   * had to be made again (after a host restart, say). True when it was made.
   */
  async ensureNetwork(ref: VmRef, policy: NetworkPolicy | undefined): Promise<boolean> {
    const { net, made } = await this.core.networks.ensure(ref.slot);
    if (made) await applyPolicy(net, policy ?? { ingress: [], egress: 'none' });
    return made;
  }

  /** Continues a VM that QEMU stopped (after a disk error, say); false if it does not run here or refused. */
  async cont(id: string): Promise<boolean> {
    const vm = this.core.hosts.running(id);
    if (!vm) return false;
    return vm.qmp.execute('cont').then(
      () => true,
      () => false,
    );
  }

  /**
   * Takes over a VM whose QEMU an earlier cellad started (with `outliveParent`)
   * and left running, if process `pid` with start time `startTime` still runs
   * from this VM's folder; undefined, and nothing killed, otherwise (adopt.ts).
   */
  adopt(ref: VmRef, pid: number, startTime: string, opts: AppLogOption = {}): Promise<RunningVm | undefined> {
    return adopt(this.core, ref, pid, startTime, opts);
  }

  /**
   * Removes everything of this data directory a cellad that died left behind,
   * except the VMs in `keep` and what this engine holds (adopt.ts).
   */
  reclaim(keep: Iterable<VmRef>): Promise<ReclaimResult> {
    return reclaim(this.core, keep);
  }

  /** Fills the warm pool of `image` to `count` (default: its own number, else warmClones) and waits until it is ready (pool.ts). */
  prewarm(image: string, count?: number): Promise<void> {
    return this.pool.prewarm(image, count);
  }

  /** Sets what each new warm clone of `image` runs before it is pooled, and how many it keeps (pool.ts); undefined removes it. */
  setWarmUp(image: string, warmUp: WarmUp | undefined, clones?: number): void {
    this.pool.setWarmUp(image, warmUp, clones);
  }

  /** Stops the warm clones of `image` (its snapshot is about to be deleted) and waits for a fill in progress. */
  forgetImage(image: string): Promise<void> {
    return this.pool.forget(image);
  }

  /**
   * Ends a VM, running or suspended, and removes everything it had: its
   * QEMU, and any other QEMU still running from its folder (one a crashed
   * cellad left halfway through a restore), its namespace and its folder.
   */
  async terminate(ref: VmRef): Promise<void> {
    await settleStandby(this.core, ref.id);
    await endStandby(this.core, ref.id);
    await endParked(this.core, ref.id);
    const vm = this.core.hosts.running(ref.id);
    if (vm) {
      this.core.hosts.stop(ref.id, vm.qemu);
      await vm.qemu.kill();
    }
    await killQemusIn(this.core, ref.id);
    crashPoint('terminate:killed');
    if (ref.slot >= 0) await this.core.networks.release(networkForSlot(ref.slot));
    rmSync(this.vmDir(ref.id), { recursive: true, force: true });
  }

  /**
   * Stops every warm VM and frees the spare namespaces. Running VMs are
   * stopped too (without saving), or with `keepRunning` only let go: their
   * connections close and QEMU runs on, for a later engine to adopt (this
   * needs `outliveParent`, else they die with this process).
   */
  async close(opts: { keepRunning?: boolean } = {}): Promise<void> {
    const { core } = this;
    core.closing = true;
    // Parked VMs are suspended: their checkpoints hold everything, so their QEMUs can go.
    for (const { name } of core.hosts.allParked()) await endParked(core, name);
    await endAllStandbys(core);
    await this.pool.settle();
    const running = this.list();
    if (opts.keepRunning) {
      for (const vm of running) {
        core.hosts.write(vm.id, undefined);
        vm.release();
      }
    }
    await Promise.all([this.pool.discardAll(), ...(opts.keepRunning ? [] : running.map((vm) => this.terminate(vm.ref)))]);
    await core.networks.close();
    core.cgroups.close();
    core.spawner.close();
  }
}
