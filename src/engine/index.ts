/**
 * The microVM engine: boot a template VM and capture an image snapshot,
 * launch clones from it, suspend them to disk, resume them, terminate them.
 *
 * RAM: the template runs on a MAP_SHARED file (`mem`) and is captured with
 * x-ignore-shared, so only device state is written. Clones map `mem`
 * MAP_PRIVATE: pages come lazily from the shared page cache, writes are
 * private. A suspend writes device state plus only the pages the clone wrote.
 * Disk: every VM has its own qcow2 overlay on the image's disk.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, openSync, fdatasyncSync, fsyncSync, closeSync, readdirSync, realpathSync, renameSync, rmSync, statSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, type ProcessSpec } from '../agent/index.js';
import { allocatedBytes, copyOverlay, createOverlay } from '../disk/index.js';
import { CellaError, isCellaError } from '../contract/index.js';
import { crashPoint, run } from '../host/index.js';
import { GUEST, NetworkPool, applyPolicy, networkForSlot, reclaimNamespaces, type NamespaceOwner, type NetworkPolicy, type VmNetwork } from '../net/index.js';
import { loadGuestArtifacts, type GuestArtifacts } from '../setup/artifacts.js';
import {
  BUILDER_UIDS,
  BUILDER_UID_BASE,
  Cgroups,
  QEMU_BINARY,
  QemuProcess,
  QmpClient,
  buildQemuArgs,
  cgroupLimits,
  detectAccel,
  guestCmdline,
  hostTscKhz,
  listPids,
  openFiles,
  processArgs,
  processJail,
  processStartTime,
  requireExecutable,
  vmJail,
  type AccelInfo,
  type ExitInfo,
  type Jail,
  type QemuSpec,
} from '../vmm/index.js';
import { loadState, saveState } from './migrate.js';
import { dirtyPages } from './pagemap.js';
import { SNAPSHOT_FORMAT, openSnapshot, sha256, snapshotFiles, writeManifest, type SnapshotManifest } from './snapshot.js';
import { AppLog, RunningVm, vmFiles, type BlockIoError, type VmRef } from './vm.js';
import { HostTable } from './host.js';
import { BuilderVm, type BuilderSpec } from './builder.js';

export { RunningVm, AppLog, vmFiles, type BlockIoError, type VmRef } from './vm.js';
export { BuilderVm, BUILD_MOUNT, type BuilderSpec } from './builder.js';
export { openSnapshot, snapshotFiles, type SnapshotManifest } from './snapshot.js';
export { filterMigrationStream, type FilterStats } from './migration-stream.js';
export { processStartTime } from '../vmm/index.js';

const PAGE = 4096;
/** The RAM block id of the guest memory backend (`-object memory-backend-file,id=mem`). */
const RAM_BLOCK = 'mem';
const MAX_SOCKET_PATH = 107;

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
  log?: (line: string) => void;
}

/** Where a VM's app output goes: a file it is appended to (default `<vm folder>/app.log`), or null for nowhere. */
export interface AppLogOption {
  appLog?: string | null;
}

/**
 * Options of the operations that start a QEMU for a VM (launch, resume).
 * `onSpawn` learns its pid as soon as it exists, before anything is loaded
 * into it, so a caller can record it durably: a restarted cellad then finds
 * (and adopts or kills) the QEMU of an operation that was cut short.
 */
export interface StartOptions extends AppLogOption {
  onSpawn?: (pid: number, startTime: string) => void;
}

export interface ReclaimResult {
  killed: number;
  removedDirs: number;
  removedNamespaces: number;
}

export interface SnapshotSpec {
  /** Directory that will hold the snapshot; must not hold one yet. */
  dir: string;
  /** Raw ext4 root filesystem; the snapshot's disk is layered on it and it must stay in place. */
  rootfs: string;
  app: ProcessSpec;
  /** The snapshot is taken once this guest port accepts connections (unless `ready` says otherwise). */
  port: number;
  /**
   * Decides when the app is ready instead of waiting for `port`: resolves when
   * it is, throws to fail the snapshot. `check` throws if the VM or the app died.
   */
  ready?: (host: string, check: () => void) => Promise<void>;
  memoryMiB: number;
  vcpus?: number;
  readyTimeoutMs?: number;
  /** App output during the template boot. */
  onLog?: (stream: 'stdout' | 'stderr', data: Buffer) => void;
}

export interface SuspendResult {
  ms: number;
  /** Bytes written for the checkpoint (device state + dirty pages). */
  bytes: number;
  dirtyPages: number;
  totalPages: number;
  /** Milliseconds from the start to each step. */
  phases: Record<string, number>;
}

/** Events: 'vm-exit' (id, ExitInfo & {expected}) whenever a VM's QEMU ends; 'vm-io-error' (id, BlockIoError). */
export class Engine extends EventEmitter {
  /** What this engine holds in each folder of vms/ (see host.ts). */
  private readonly hosts = new HostTable<QemuProcess, RunningVm, WarmVm>();
  private readonly pool: NetworkPool;
  /** Warm pool fills in progress, per image directory. */
  private readonly warming = new Map<string, Promise<void>>();
  /** How long a suspended VM's stopped QEMU is kept for a quick resume (EngineOptions.parkSeconds). */
  private parkMs = 0;
  private closing = false;
  /** One cgroup per QEMU, under `cella/<data directory tag>`. */
  private readonly cgroups: Cgroups;
  /** QEMUs drop to their own uid in a chroot (see src/vmm/jail.ts); only root can hand them one. */
  private readonly jailed = process.getuid?.() === 0;
  private readonly builderUids = new Set<number>();

  private constructor(
    readonly dataDir: string,
    readonly guest: GuestArtifacts,
    readonly accel: AccelInfo,
    /** Snapshots carry it; a launch refuses a snapshot made by anything else. */
    readonly fingerprint: string,
    private readonly log: (line: string) => void,
    warmNetworks: number,
    private readonly qemuBinary: string,
    private readonly warmTarget: number,
    private readonly outliveParent: boolean,
  ) {
    super();
    const tag = sha256(Buffer.from(dataDir)).slice(0, 16);
    this.networkTag = `cella-owner:${tag}`;
    this.namespaces = { tag: this.networkTag, intentDir: path.join(dataDir, 'netns') };
    this.pool = new NetworkPool(warmNetworks, this.namespaces);
    this.cgroups = Cgroups.open(`cella/${tag}`, log);
    if (!this.jailed) log('not running as root: QEMU runs as this user, without its own uid or chroot');
  }

  /**
   * The tag on this data directory's network namespaces (namespaceOwner in
   * src/net): a restarted engine tells its own from those of engines of other
   * data directories, which it leaves alone.
   */
  readonly networkTag: string;
  private readonly namespaces: NamespaceOwner;

  static async open(opts: EngineOptions): Promise<Engine> {
    const log = opts.log ?? ((line: string) => process.stderr.write(`cella: ${line}\n`));
    const qemuBinary = opts.qemuBinary ?? QEMU_BINARY;
    requireExecutable(qemuBinary, 'QEMU (qemu-system-x86_64)');
    const guest = loadGuestArtifacts(opts.guestDir);
    const qemuVersion = (await run(qemuBinary, ['--version'])).split('\n')[0] ?? '';
    const accel = await detectAccel({
      kernel: guest.kernel,
      initrd: guest.initrd,
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
          // The device model: any change to the command line changes what state means.
          machine: buildQemuArgs(canonicalSpec(accel.accel)),
        }),
      ),
    );
    mkdirSync(path.join(opts.dataDir, 'vms'), { recursive: true });
    // The real path: reclaim() and adopt() match it against the paths /proc shows.
    const dataDir = realpathSync(opts.dataDir);
    const engine = new Engine(dataDir, guest, accel, fingerprint, log, opts.warmNetworks ?? 2, qemuBinary, opts.warmClones ?? 1, opts.outliveParent ?? false);
    engine.parkMs = (opts.parkSeconds ?? 0) * 1000;
    await engine.pool.prewarm();
    return engine;
  }

  vmDir(id: string): string {
    return path.join(this.dataDir, 'vms', id);
  }

  get(id: string): RunningVm | undefined {
    return this.hosts.running(id);
  }

  list(): RunningVm[] {
    return this.hosts.allRunning();
  }

  // ---------- image snapshots ----------

  async createSnapshot(input: SnapshotSpec): Promise<SnapshotManifest> {
    // Backing files and mappings are recorded by path: make them absolute.
    const spec = { ...input, dir: path.resolve(input.dir), rootfs: path.resolve(input.rootfs) };
    const files = snapshotFiles(spec.dir);
    if (existsSync(files.manifest)) throw new CellaError('INVALID_STATE', `a snapshot already exists at ${spec.dir}`);
    if (!existsSync(spec.rootfs)) throw new CellaError('INVALID_ARGUMENT', `root filesystem ${spec.rootfs} does not exist`);
    if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64 || spec.memoryMiB > 65536) {
      throw new CellaError('INVALID_ARGUMENT', `memoryMiB must be an integer in 64..65536, got ${spec.memoryMiB}`);
    }
    mkdirSync(spec.dir, { recursive: true });
    // The boot's console and app output stay with the snapshot, as a record.
    const record = vmFiles(path.join(spec.dir, 'template'));
    mkdirSync(path.join(spec.dir, 'template'), { recursive: true });
    // Sockets (and QEMU's stderr) live under vms/, where reclaim() finds a template QEMU left by a cellad that died.
    const workName = `.template-${randomUUID().slice(0, 8)}`;
    const work = this.vmDir(workName);
    const sockets = vmFiles(work);
    checkSocketPaths(sockets);
    rmSync(files.mem, { force: true });
    rmSync(files.disk, { force: true });
    await createOverlay(spec.rootfs, 'raw', files.disk);

    const vcpus = spec.vcpus ?? 1;
    const net = await this.pool.acquire();
    const started = Date.now();
    let qemu: QemuProcess | undefined;
    let qmp: QmpClient | undefined;
    let agent: AgentClient | undefined;
    let appLog: AppLog | undefined;
    this.hosts.begin(workName, 'template');
    try {
      mkdirSync(work);
      qemu = this.spawnQemu(
        {
          ...this.baseSpec(`template-${path.basename(spec.dir)}`, spec.memoryMiB, vcpus),
          memPath: files.mem,
          memShared: true,
          boot: {
            kernel: this.guest.kernel,
            initrd: this.guest.initrd,
            cmdline: guestCmdline({ tscKhz: hostTscKhz(), guestCidr: GUEST.cidr, gateway: GUEST.gateway }),
          },
          disk: files.disk,
          qmpSocket: sockets.qmp,
          ctlSocket: sockets.ctl,
          logSocket: sockets.log,
          consoleLog: record.console,
        },
        net,
        work,
      );
      const q = qemu;
      qmp = await QmpClient.connect(sockets.qmp, 10_000, () => q.alive);
      agent = await AgentClient.connect(sockets.ctl);
      appLog = await AppLog.connect(sockets.log, record.appLog);
      if (spec.onLog) appLog.on('data', spec.onLog);
      const deadline = started + (spec.readyTimeoutMs ?? 60_000);
      await this.waitGuest(agent, qemu, deadline, record.console);
      // A fresh boot has no entropy yet: getrandom() (Python's `import random`, TLS) would block until the kernel gathers some.
      await agent.reseed();
      const templateBootMs = Date.now() - started;
      let appExit: number | undefined;
      agent.on('app-exit', (status: number) => (appExit = status));
      await agent.startApp(spec.app);
      const check = (): void => {
        if (!q.alive) throw new CellaError('GUEST_BOOT_FAILED', `template VM died: ${q.describeExit()}`);
        if (appExit !== undefined) {
          throw new CellaError('APP_NOT_READY', `the app exited (wait status ${appExit}) before it was ready: ${tail(record.appLog)}`);
        }
      };
      if (spec.ready) await spec.ready(net.hostAddress, check);
      else await waitPort(net.hostAddress, spec.port, deadline, check);
      const captureStart = Date.now();
      await agent.sync();
      await qmp.execute('stop');
      await saveState(qmp, qemu, processJail(qemu.pid), sockets.migrate, files.devstate);
      await qmp.execute('quit').catch(() => {});
      await withTimeout(qemu.waitExit(), 5000, () => q.kill());
      // The RAM file is the snapshot: it must be on disk before the manifest says so.
      const fd = openSync(files.mem, 'r+');
      fdatasyncSync(fd);
      closeSync(fd);
      await createOverlay(files.disk, 'qcow2', files.overlay);
      for (const f of [files.mem, files.disk, files.devstate, files.overlay]) chmodSync(f, 0o444);
      const devstate = readFileSync(files.devstate);
      const manifest: SnapshotManifest = {
        format: SNAPSHOT_FORMAT,
        fingerprint: this.fingerprint,
        accel: this.accel.accel,
        memoryMiB: spec.memoryMiB,
        vcpus,
        appPort: spec.port,
        devstateSha256: sha256(devstate),
        devstateBytes: devstate.length,
        memAllocatedBytes: allocatedBytes(files.mem),
        diskAllocatedBytes: allocatedBytes(files.disk),
        createdAt: new Date().toISOString(),
        templateBootMs,
        captureMs: Date.now() - captureStart,
      };
      writeManifest(spec.dir, manifest);
      return manifest;
    } catch (err) {
      rmSync(files.devstate, { force: true });
      throw err;
    } finally {
      agent?.close();
      qmp?.close();
      await appLog?.close();
      await qemu?.kill();
      await this.pool.release(net);
      rmSync(work, { recursive: true, force: true });
      this.hosts.settle(workName);
    }
  }

  /**
   * Boots a builder VM on `spec.top` (see BuilderVm). It has no network device
   * and dies with this process: a build is never adopted by a restarted cellad.
   */
  async startBuilder(spec: BuilderSpec): Promise<BuilderVm> {
    const workName = `.builder-${randomUUID().slice(0, 8)}`;
    const work = this.vmDir(workName);
    const sockets = vmFiles(work);
    checkSocketPaths(sockets);
    mkdirSync(work);
    const jail = this.builderJail(work, path.dirname(path.resolve(spec.top)));
    const memoryMiB = spec.memoryMiB ?? 1024;
    const vcpus = spec.vcpus ?? 1;
    let qemu: QemuProcess | undefined;
    let qmp: QmpClient | undefined;
    let agent: AgentClient | undefined;
    let net: VmNetwork | undefined;
    try {
      if (spec.network) {
        net = await this.pool.acquire();
        // Nothing reaches into a builder; what it may reach is its policy's egress.
        await applyPolicy(net, { ingress: [], egress: spec.network.egress });
      }
      qemu = QemuProcess.spawn(
        buildQemuArgs({
          name: workName,
          accel: this.accel.accel,
          memoryMiB,
          vcpus,
          tcgTbSizeMiB: 64,
          memPath: path.join(work, 'mem'),
          memShared: false,
          boot: {
            kernel: this.guest.kernel,
            initrd: this.guest.initrd,
            cmdline: guestCmdline({ tscKhz: hostTscKhz(), guestCidr: GUEST.cidr, gateway: GUEST.gateway, buildDisk: '/dev/vdb' }),
          },
          disk: spec.top,
          buildDisk: spec.buildDisk,
          qmpSocket: sockets.qmp,
          ctlSocket: sockets.ctl,
          consoleLog: spec.consoleLog,
          jail,
          ...(net ? { tap: { ifname: GUEST.tap, mac: GUEST.mac } } : {}),
        }),
        { binary: this.qemuBinary, cgroup: this.cgroups.create(workName, cgroupLimits({ memoryMiB, vcpus })), ...(net ? { netns: net.netns } : {}) },
      );
      const q = qemu;
      qmp = await QmpClient.connect(sockets.qmp, 10_000, () => q.alive);
      agent = await AgentClient.connect(sockets.ctl);
      await this.waitGuest(agent, qemu, Date.now() + (spec.bootTimeoutMs ?? 60_000), spec.consoleLog);
      await agent.reseed();
      const uid = jail?.uid;
      const network = net;
      return new BuilderVm(spec, qemu, qmp, agent, work, jail, async () => {
        if (uid !== undefined) this.builderUids.delete(uid);
        if (network) await this.pool.release(network).catch(() => {});
      });
    } catch (err) {
      agent?.close();
      qmp?.close();
      await qemu?.kill();
      rmSync(work, { recursive: true, force: true });
      if (jail) this.builderUids.delete(jail.uid);
      if (net) await this.pool.release(net).catch(() => {});
      throw err;
    }
  }

  /**
   * A builder's jail: a free builder uid, and its folder as its root when its
   * layers (in `layerDir`) are on the same file system, so each new layer can
   * be hard-linked in for QEMU to open (BuilderVm.commit); otherwise it keeps
   * the host's root and opens the layer by its path.
   */
  private builderJail(work: string, layerDir: string): Jail | undefined {
    if (!this.jailed) return undefined;
    const sameFs = statSync(work).dev === statSync(layerDir).dev;
    let uid: number;
    do uid = BUILDER_UID_BASE + Math.floor(Math.random() * BUILDER_UIDS);
    while (this.builderUids.has(uid));
    this.builderUids.add(uid);
    if (!sameFs) this.log(`builder layers in ${layerDir} are on another file system than ${work}: the builder runs without a chroot`);
    return { uid, gid: uid, chroot: sameFs ? work : undefined };
  }

  private async waitGuest(agent: AgentClient, qemu: QemuProcess, deadline: number, consoleLog: string): Promise<void> {
    const hello = new Promise<void>((resolve) => agent.once('hello', () => resolve()));
    const died = qemu.waitExit().then(() => {
      throw new CellaError('GUEST_BOOT_FAILED', `guest did not boot: ${qemu.describeExit()}; console: ${tail(consoleLog)}`);
    });
    await withTimeout(Promise.race([hello, died]), Math.max(deadline - Date.now(), 0), () => {
      throw new CellaError('GUEST_BOOT_FAILED', `guest agent did not start in time; console: ${tail(consoleLog)}`);
    });
  }

  // ---------- clones ----------

  /**
   * Launches a new VM `id` from the snapshot in `image`: from the image's warm
   * pool when it has a clone ready (unless `fromPool` is false), else cold.
   */
  async launch(image: string, id: string, opts: { fromPool?: boolean; network?: NetworkPolicy } & StartOptions = {}): Promise<RunningVm> {
    const imageDir = path.resolve(image);
    const snap = openSnapshot(imageDir, this.fingerprint);
    if (id.startsWith('.')) throw new CellaError('INVALID_ARGUMENT', `VM id ${id} must not start with a dot`);
    const dir = this.vmDir(id);
    try {
      mkdirSync(dir);
    } catch {
      throw new CellaError('INVALID_STATE', `VM ${id} already exists`);
    }
    checkSocketPaths(vmFiles(dir));
    const appLog = appLogFile(dir, opts);
    this.hosts.begin(id, 'restoring');
    const warm = opts.fromPool === false ? undefined : this.hosts.takeWarm(imageDir);
    let net: VmNetwork | undefined = warm?.net;
    try {
      let vm: RunningVm;
      if (warm) {
        this.hosts.hold(id, warm.qemu);
        warm.detach();
        // Replaces the empty directory claimed above; open files and sockets move with it.
        renameSync(warm.dir, dir);
        try {
          warm.qemu.cgroup?.rename(id);
        } catch (err) {
          // Its limits hold all the same; only the cgroup's name is off, and reclaim() spares a cgroup in use.
          this.log(`VM ${id}: cgroup not renamed: ${(err as Error).message}`);
        }
        warm.appLog.setFile(appLog);
        warm.t0 = performance.now();
        warm.phases = {};
        opts.onSpawn?.(warm.qemu.pid, warm.qemu.startTime);
        // Before the guest runs under its identity: it never sees a network wider than its own.
        if (opts.network) await applyPolicy(warm.net, opts.network);
        vm = await this.activate({ id, imageDir, slot: warm.net.slot }, { ...warm, dir }, true);
      } else {
        const r = await this.restoreClone(id, dir, imageDir, snap, appLog, opts.onSpawn);
        net = r.net;
        if (opts.network) await applyPolicy(net, opts.network).catch(async (err: unknown) => {
          await dispose(r);
          throw err;
        });
        vm = await this.activate({ id, imageDir, slot: net.slot }, r, false);
      }
      this.refill(imageDir);
      return vm;
    } catch (err) {
      if (net) await this.pool.release(net).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      throw err;
    } finally {
      this.hosts.settle(id);
    }
  }

  /**
   * Brings a suspended VM back from its checkpoint. Crash-safe (ADR 0007):
   * the checkpoint stays untouched while the new QEMU loads it (a half-done
   * restore is killed and redone); it is consumed, by a rename, just before
   * the guest runs again, because from then on its disk moves ahead of it.
   */
  async resume(ref: VmRef, opts: StartOptions = {}): Promise<RunningVm> {
    const held = this.hosts.entry(ref.id);
    if (held && held.state !== 'parked') throw new CellaError('INVALID_STATE', `VM ${ref.id} is ${held.state === 'stopping' ? 'running' : held.state}`);
    const snap = openSnapshot(ref.imageDir, this.fingerprint);
    const dir = this.vmDir(ref.id);
    const files = vmFiles(dir);
    try {
      statSync(files.checkpoint);
    } catch {
      throw new CellaError('INVALID_STATE', `VM ${ref.id} has no checkpoint to resume from`);
    }
    const parked = this.hosts.parked(ref.id);
    if (parked) return this.unpark(ref.id, parked.vm, opts);
    this.hosts.begin(ref.id, 'restoring');
    try {
      const r = await this.restore(ref.id, dir, ref.imageDir, snap, networkForSlot(ref.slot), files.checkpoint, appLogFile(dir, opts), 'resume', opts.onSpawn);
      crashPoint('resume:loaded');
      await this.commitResume(r, files);
      crashPoint('resume:committed');
      const vm = await this.activate(ref, r, false, true);
      crashPoint('resume:running');
      rmSync(consumedCheckpoint(files), { force: true });
      return vm;
    } finally {
      this.hosts.settle(ref.id);
    }
  }

  /**
   * The point of no return of a resume: the checkpoint is renamed away
   * (durably) before the guest may run, so a restarted cellad that finds no
   * checkpoint knows the QEMU it finds is the VM, and one that finds the
   * checkpoint knows any QEMU it finds never ran and may be killed.
   */
  private async commitResume(r: Pick<Restored, 'qemu'> & Partial<Restored>, files: ReturnType<typeof vmFiles>): Promise<void> {
    try {
      renameSync(files.checkpoint, consumedCheckpoint(files));
      syncDir(path.dirname(files.checkpoint));
    } catch (err) {
      await dispose(r);
      throw new CellaError('QEMU_FAILED', `the checkpoint of ${path.basename(path.dirname(files.checkpoint))} could not be taken: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Spawns QEMU in `net` and loads `stateFile` into it; the VM is left paused. */
  private async restore(
    name: string,
    dir: string,
    imageDir: string,
    snap: SnapshotManifest,
    net: VmNetwork,
    stateFile: string,
    appLog: string | null,
    kind: 'launch' | 'resume',
    onSpawn?: StartOptions['onSpawn'],
  ): Promise<Restored> {
    const files = vmFiles(dir);
    const t0 = performance.now();
    const phases: Record<string, number> = {};
    // A socket file left by an earlier QEMU of this folder must not answer for the new one.
    for (const f of [files.qmp, files.ctl, files.log]) rmSync(f, { force: true });
    const qemu = this.spawnQemu(
      {
        ...this.baseSpec(name, snap.memoryMiB, snap.vcpus),
        memPath: snapshotFiles(imageDir).mem,
        memShared: false,
        disk: files.disk,
        qmpSocket: files.qmp,
        ctlSocket: files.ctl,
        logSocket: files.log,
        consoleLog: files.console,
        incoming: true,
      },
      net,
      dir,
    );
    const r: Partial<Restored> & Pick<Restored, 'qemu'> = { dir, net, qemu, t0, phases };
    try {
      onSpawn?.(qemu.pid, qemu.startTime);
      crashPoint(kind === 'launch' ? 'launch:spawned' : 'resume:spawned');
      r.qmp = await QmpClient.connect(files.qmp, 10_000, () => qemu.alive);
      mark(r as Restored, 'qmp');
      // Connect the guest's ports before its state loads: the snapshot says "host
      // connected", and a port seen closed on restore costs the agent a reconnect.
      [r.agent, r.appLog] = await Promise.all([AgentClient.connect(files.ctl), AppLog.connect(files.log, appLog)]);
      await loadState(r.qmp, qemu, this.vmJail(net, dir), files.incoming, stateFile);
      mark(r as Restored, 'loaded');
      return r as Restored;
    } catch (err) {
      await dispose(r);
      throw err;
    }
  }

  /**
   * Starts the QEMU of the VM in folder `dir`: in `net`, jailed in `dir`, in a
   * cgroup named after it; its folder's host entry holds it from now on.
   */
  private spawnQemu(spec: QemuSpec, net: VmNetwork, dir: string): QemuProcess {
    const qemu = QemuProcess.spawn(buildQemuArgs({ ...spec, jail: this.vmJail(net, dir) }), {
      netns: net.netns,
      binary: this.qemuBinary,
      outliveParent: this.outliveParent ? { stderrFile: vmFiles(dir).qemuLog } : undefined,
      cgroup: this.cgroups.create(path.basename(dir), cgroupLimits(spec)),
    });
    try {
      this.hosts.hold(path.basename(dir), qemu);
    } catch (err) {
      void qemu.kill();
      throw err;
    }
    return qemu;
  }

  private vmJail(net: VmNetwork, dir: string): Jail | undefined {
    return this.jailed ? vmJail(net.slot, dir) : undefined;
  }

  /**
   * Runs a restored VM under its final identity and starts supervising it.
   * For a resume (`committed`: its checkpoint was consumed), a `cont` that
   * fails gives the checkpoint back, since the guest never ran.
   */
  private async activate(ref: VmRef, r: Restored, pooled: boolean, committed = false): Promise<RunningVm> {
    try {
      await r.qmp.execute('cont');
    } catch (err) {
      await dispose(r);
      if (committed) {
        const files = vmFiles(r.dir);
        renameSync(consumedCheckpoint(files), files.checkpoint);
      }
      throw err;
    }
    mark(r, 'running');
    try {
      await identify(r, ref.id);
    } catch (err) {
      await dispose(r);
      throw err;
    }
    return this.supervise(new RunningVm(ref, r.dir, r.net, r.qemu, r.qmp, r.agent, r.appLog, this.hosts.handle(ref.id, r.qemu), r.phases, pooled));
  }

  /**
   * Makes sure a suspended VM's namespace exists, with `policy` in it when it
   * had to be made again (after a host restart, say). True when it was made.
   */
  async ensureNetwork(ref: VmRef, policy: NetworkPolicy | undefined): Promise<boolean> {
    const { net, made } = await this.pool.ensure(ref.slot);
    if (made) await applyPolicy(net, policy ?? { ingress: [], egress: 'none' });
    return made;
  }

  /** Continues a VM that QEMU stopped (after a disk error, say); false if it does not run here or refused. */
  async cont(id: string): Promise<boolean> {
    const vm = this.hosts.running(id);
    if (!vm) return false;
    return vm.qmp.execute('cont').then(
      () => true,
      () => false,
    );
  }

  /** The VM's operation is done: from now on it runs, and its exit is watched. */
  private supervise(vm: RunningVm): RunningVm {
    this.hosts.write(vm.id, { state: 'running', qemu: vm.qemu, vm });
    vm.on('io-error', (data: BlockIoError) => this.emit('vm-io-error', vm.id, data));
    vm.once('exit', (info: ExitInfo & { expected: boolean }) => {
      this.hosts.exited(vm.id, vm.qemu);
      if (!info.expected) this.log(`VM ${vm.id}: QEMU ended unexpectedly: ${vm.qemu.describeExit()}`);
      this.emit('vm-exit', vm.id, info);
    });
    return vm;
  }

  /** A new clone of the image in `dir`: its own overlay and namespace, state loaded, paused. */
  private async restoreClone(name: string, dir: string, imageDir: string, snap: SnapshotManifest, appLog: string | null, onSpawn?: StartOptions['onSpawn']): Promise<Restored> {
    copyOverlay(snapshotFiles(imageDir).overlay, vmFiles(dir).disk);
    const net = await this.pool.acquire();
    try {
      const r = await this.restore(name, dir, imageDir, snap, net, snapshotFiles(imageDir).devstate, appLog, 'launch', onSpawn);
      crashPoint('launch:loaded');
      return r;
    } catch (err) {
      await this.pool.release(net).catch(() => {});
      throw err;
    }
  }

  // ---------- restart of cellad ----------

  /**
   * Takes over a VM whose QEMU an earlier cellad started (with `outliveParent`)
   * and left running when it died: if process `pid` with start time `startTime`
   * (RunningVm.pid/pidStartTime) still runs from this VM's folder, reconnects
   * to its QMP, control and log sockets and supervises it like any VM.
   * Undefined, and nothing is killed, when that process is gone or is not this
   * VM's. The VM is left in whatever state QMP reports (`queryStatus()`): one
   * found paused, e.g. halfway through a launch or suspend, stays paused for
   * the caller to continue or terminate; a running one has its agent checked.
   */
  async adopt(ref: VmRef, pid: number, startTime: string, opts: AppLogOption = {}): Promise<RunningVm | undefined> {
    if (this.hosts.running(ref.id)) throw new CellaError('INVALID_STATE', `VM ${ref.id} is running`);
    if (processStartTime(pid) !== startTime || this.folderOfQemu(pid) !== ref.id) return undefined;
    const dir = this.vmDir(ref.id);
    const files = vmFiles(dir);
    const qemu = QemuProcess.adopt(pid, startTime, files.qemuLog, this.cgroups.existing(ref.id));
    if (!qemu) return undefined;
    this.hosts.begin(ref.id, 'adopting');
    this.hosts.hold(ref.id, qemu);
    let qmp: QmpClient | undefined;
    let agent: AgentClient | undefined;
    let appLog: AppLog | undefined;
    try {
      // QEMU's sockets (server=on) take a new client once the dead cellad's connection dropped.
      qmp = await QmpClient.connect(files.qmp, 10_000, () => processStartTime(pid) === startTime);
      [agent, appLog] = await Promise.all([AgentClient.connect(files.ctl), AppLog.connect(files.log, appLogFile(dir, opts))]);
      const { running } = await qmp.execute<{ running: boolean }>('query-status');
      // The guest agent reopens its port when it reads EOF, so it answers the new connection.
      if (running) await agent.ping();
      return this.supervise(new RunningVm(ref, dir, networkForSlot(ref.slot), qemu, qmp, agent, appLog, this.hosts.handle(ref.id, qemu)));
    } catch (err) {
      qemu.release();
      agent?.close();
      qmp?.close();
      await appLog?.close();
      if (processStartTime(pid) !== startTime) return undefined;
      throw err;
    } finally {
      this.hosts.settle(ref.id);
    }
  }

  /**
   * Removes everything of this data directory a cellad that died left behind,
   * except the VMs in `keep` (running ones, still to adopt, and suspended ones,
   * with their folders and namespaces): QEMUs running from another folder of
   * `vms/` (VMs, warm clones, templates) are killed, the other folders of
   * `vms/` removed, the namespaces this data directory made deleted, once
   * nothing runs in them, and its cgroups of QEMUs that ended removed. What
   * this engine itself holds (running VMs, warm clones, spare namespaces,
   * operations in flight) is spared; the intended use is right after open(),
   * before any launch, with no other engine on this data directory.
   */
  async reclaim(keep: Iterable<VmRef>): Promise<ReclaimResult> {
    const ids = new Set<string>(this.hosts.names());
    const slots = new Set<number>([...this.pool.slots(), ...this.list().map((vm) => vm.ref.slot)]);
    for (const ref of keep) {
      ids.add(ref.id);
      slots.add(ref.slot);
    }
    // Every QEMU of this data directory that the engine does not hold goes, kept folders included: a
    // suspended VM's folder may hold the QEMU of a restore that a crash cut short (ADR 0007).
    const held = this.hosts.heldPids();
    const busy = this.hosts.inFlight();
    const strays = listPids().flatMap((pid) => {
      const folder = held.has(pid) ? undefined : this.folderOfQemu(pid);
      return folder !== undefined && !busy.has(folder) ? [{ pid, folder }] : [];
    });
    const killed = await Promise.all(strays.map(({ pid, folder }) => this.killFound(pid, folder)));
    let removedDirs = 0;
    for (const name of readdirSync(path.join(this.dataDir, 'vms'))) {
      // A kept folder keeps its VM's files; what a suspend cut short (a half-written checkpoint) goes.
      if (ids.has(name)) {
        rmSync(`${vmFiles(this.vmDir(name)).checkpoint}.tmp`, { force: true });
        continue;
      }
      rmSync(this.vmDir(name), { recursive: true, force: true });
      removedDirs++;
    }
    const removedNamespaces = await reclaimNamespaces(this.namespaces, slots);
    // The killed QEMUs' cgroups went as they exited; these are those of QEMUs that ended while no cellad ran.
    this.cgroups.reclaim(ids);
    return { killed: killed.filter(Boolean).length, removedDirs, removedNamespaces };
  }

  /**
   * The folder under `vms/` that process `pid` is a QEMU of, if it is one of
   * this data directory's (its QMP socket is there). Its open files tell the
   * folder's current name: a warm clone's was renamed when it was launched,
   * while its command line keeps the old one.
   */
  private folderOfQemu(pid: number): string | undefined {
    const vms = `${path.join(this.dataDir, 'vms')}/`;
    const args = processArgs(pid);
    const i = args.indexOf('-qmp');
    const qmp = i < 0 ? undefined : args[i + 1];
    if (!qmp?.startsWith(`unix:${vms}`)) return undefined;
    const file = openFiles(pid).find((f) => f.startsWith(vms)) ?? qmp.slice('unix:'.length);
    return file.slice(vms.length).split('/')[0];
  }

  // ---------- warm pool ----------

  /**
   * Fills the warm pool of `image` to `count` and waits until it is ready.
   * A warm clone is restored, run once through the paths a launch uses (agent,
   * TCP), then paused: under TCG this moves the first-execution translation
   * cost off the launch path. It has never served the app.
   */
  async prewarm(image: string, count = this.warmTarget): Promise<void> {
    const imageDir = path.resolve(image);
    for (;;) {
      const running = this.warming.get(imageDir);
      if (running) {
        await running.catch(() => {});
        continue;
      }
      if (this.closing || this.hosts.warm(imageDir).length >= count) return;
      const job = this.fill(imageDir, count);
      this.warming.set(imageDir, job);
      try {
        await job;
      } finally {
        this.warming.delete(imageDir);
      }
    }
  }

  private async fill(imageDir: string, count: number): Promise<void> {
    while (!this.closing && this.hosts.warm(imageDir).length < count) await this.makeWarm(imageDir);
  }

  private refill(imageDir: string): void {
    if (this.warmTarget === 0 || this.closing || this.warming.has(imageDir)) return;
    this.prewarm(imageDir).catch((err: Error) => this.log(`warm pool for ${imageDir}: ${err.message}`));
  }

  /** Adds one warm clone to the pool of `imageDir`. */
  private async makeWarm(imageDir: string): Promise<void> {
    const snap = openSnapshot(imageDir, this.fingerprint);
    const name = `.warm-${randomUUID().slice(0, 8)}`;
    const dir = this.vmDir(name);
    mkdirSync(dir);
    this.hosts.begin(name, 'restoring');
    let r: Restored | undefined;
    try {
      // It never served the app: nothing to log until a launch says where.
      r = await this.restoreClone(name, dir, imageDir, snap, null);
      try {
        await r.qmp.execute('cont');
        await identify(r, name);
        await r.agent.ping();
        // A connection to a closed port: the guest kernel's TCP path runs, the app sees nothing.
        await poke(r.net.hostAddress, 1);
        await r.qmp.execute('stop');
      } catch (err) {
        await dispose(r);
        throw err;
      }
      const w: WarmVm = { ...r, detach: () => {} };
      const { qemu } = r;
      const onExit = (): void => {
        if (this.hosts.exited(name, qemu)) void this.discardWarm(w);
      };
      qemu.once('exit', onExit);
      w.detach = () => qemu.removeListener('exit', onExit);
      this.hosts.write(name, { state: 'warm', qemu, imageDir, warm: w });
    } catch (err) {
      if (r) await this.pool.release(r.net).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      throw err;
    } finally {
      this.hosts.settle(name);
    }
  }

  /** Stops the warm clones of `image` (its snapshot is about to be deleted) and waits for a fill in progress. */
  async forgetImage(image: string): Promise<void> {
    const imageDir = path.resolve(image);
    await this.warming.get(imageDir)?.catch(() => {});
    await Promise.all(this.takeAllWarm(imageDir).map((w) => this.discardWarm(w)));
  }

  /** Takes the warm clones of `imageDir` (of every image when absent) out of the pool, for discarding. */
  private takeAllWarm(imageDir?: string): WarmVm[] {
    return this.hosts.warm(imageDir).map(({ name, warm }) => {
      this.hosts.write(name, undefined);
      return warm;
    });
  }

  private async discardWarm(w: WarmVm): Promise<void> {
    w.detach();
    await dispose(w);
    await this.pool.release(w.net).catch(() => {});
    rmSync(w.dir, { recursive: true, force: true });
  }

  /** Saves a running VM to its folder and ends its QEMU; resume() brings it back. */
  async suspend(vm: RunningVm): Promise<SuspendResult> {
    const started = Date.now();
    const snap = openSnapshot(vm.ref.imageDir, this.fingerprint);
    const files = vmFiles(vm.dir);
    this.hosts.stop(vm.id, vm.qemu);
    const phases: Record<string, number> = {};
    const mark = (name: string): void => {
      phases[name] = Date.now() - started;
    };
    try {
      await vm.qmp.execute('stop');
      mark('stopped');
      crashPoint('suspend:stopped');
      const dirty = dirtyPages(vm.qemu.pid, snapshotFiles(vm.ref.imageDir).mem, snap.memoryMiB * 1024 * 1024);
      mark('pagemap');
      const keep = (block: string, offset: number): boolean => block !== RAM_BLOCK || dirty[offset / PAGE] === 1;
      const stats = await saveState(vm.qmp, vm.qemu, processJail(vm.qemu.pid), files.migrate, files.checkpoint, keep, mark);
      crashPoint('suspend:written');
      if (this.parkMs > 0 && !this.closing) {
        this.park(vm);
        mark('parked');
      } else {
        // Nothing is left to save: QEMU can simply go.
        await vm.qemu.kill();
        mark('exited');
      }
      let dirtyCount = 0;
      for (const d of dirty) dirtyCount += d;
      return { ms: Date.now() - started, bytes: stats.bytesOut, dirtyPages: dirtyCount, totalPages: dirty.length, phases };
    } catch (err) {
      // A VM that failed to suspend (a full disk, say) runs on as it was; one that cannot is gone, and says why.
      rmSync(files.checkpoint, { force: true });
      const why = (err as Error).message;
      if (vm.qemu.alive && (await vm.qmp.execute('cont').then(() => true, () => false))) {
        this.runOn(vm);
        throw new CellaError(isCellaError(err, 'INSUFFICIENT_CAPACITY') ? 'INSUFFICIENT_CAPACITY' : 'QEMU_FAILED', `suspend of ${vm.id} failed, it runs on: ${why}`, {
          cause: err,
          details: { stillRunning: true },
        });
      }
      await vm.qemu.kill();
      throw new CellaError('QEMU_FAILED', `suspend of ${vm.id} failed: ${why}`, { cause: err });
    }
  }

  /** A suspend that failed left the VM running after all: a later exit is a crash again. */
  private runOn(vm: RunningVm): void {
    const held = this.hosts.entry(vm.id);
    if (held?.state === 'stopping' && held.qemu === vm.qemu) this.hosts.write(vm.id, { ...held, state: 'running' });
  }

  /** Keeps a suspended VM's stopped QEMU for a while; a resume meanwhile continues it in place. */
  private park(vm: RunningVm): void {
    const timer = setTimeout(() => {
      if (this.hosts.parked(vm.id)?.qemu !== vm.qemu) return;
      this.hosts.write(vm.id, undefined);
      void vm.qemu.kill();
    }, this.parkMs);
    timer.unref();
    this.hosts.write(vm.id, { state: 'parked', qemu: vm.qemu, vm, timer });
  }

  private async unpark(id: string, vm: RunningVm, opts: StartOptions): Promise<RunningVm> {
    this.hosts.write(id, { state: 'restoring', qemu: vm.qemu });
    try {
      const files = vmFiles(vm.dir);
      opts.onSpawn?.(vm.qemu.pid, vm.qemu.startTime);
      await this.commitResume(vm, files);
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
      this.hosts.write(id, { state: 'running', qemu: vm.qemu, vm });
      crashPoint('resume:running');
      rmSync(consumedCheckpoint(files), { force: true });
      return vm;
    } finally {
      this.hosts.settle(id);
    }
  }

  /**
   * Ends a VM, running or suspended, and removes everything it had: its
   * QEMU, and any other QEMU still running from its folder (one a crashed
   * cellad left halfway through a restore), its namespace and its folder.
   */
  async terminate(ref: VmRef): Promise<void> {
    const parked = this.hosts.parked(ref.id);
    if (parked) {
      this.hosts.write(ref.id, undefined);
      await parked.qemu.kill();
    }
    const vm = this.hosts.running(ref.id);
    if (vm) {
      this.hosts.stop(ref.id, vm.qemu);
      await vm.qemu.kill();
    }
    await this.killQemusIn(ref.id);
    crashPoint('terminate:killed');
    if (ref.slot >= 0) await this.pool.release(networkForSlot(ref.slot));
    rmSync(this.vmDir(ref.id), { recursive: true, force: true });
  }

  /** Kills every QEMU running from folder `name` of `vms/` that this engine does not hold. */
  private async killQemusIn(name: string): Promise<number> {
    const held = this.hosts.heldPids();
    const found = listPids().filter((pid) => !held.has(pid) && this.folderOfQemu(pid) === name);
    const killed = await Promise.all(found.map((pid) => this.killFound(pid, name)));
    return killed.filter(Boolean).length;
  }

  /** Takes over QEMU `pid` (of folder `name`) as adopted, so it is killed and waited for like any adopted one, its cgroup removed. */
  private async killFound(pid: number, name: string): Promise<boolean> {
    const startTime = processStartTime(pid);
    if (startTime === undefined) return false;
    const qemu = QemuProcess.adopt(pid, startTime, vmFiles(this.vmDir(name)).qemuLog, this.cgroups.existing(name));
    if (!qemu) return false;
    await qemu.kill();
    return true;
  }

  /**
   * Stops every warm VM and frees the spare namespaces. Running VMs are
   * stopped too (without saving), or with `keepRunning` only let go: their
   * connections close and QEMU runs on, for a later engine to adopt (this
   * needs `outliveParent`, else they die with this process).
   */
  async close(opts: { keepRunning?: boolean } = {}): Promise<void> {
    this.closing = true;
    // Parked VMs are suspended: their checkpoints hold everything, so their QEMUs can go.
    for (const { name, entry } of this.hosts.allParked()) {
      this.hosts.write(name, undefined);
      await entry.qemu.kill();
    }
    await Promise.allSettled([...this.warming.values()]);
    const warm = this.takeAllWarm();
    const running = this.list();
    if (opts.keepRunning) {
      for (const vm of running) {
        this.hosts.write(vm.id, undefined);
        vm.release();
      }
    }
    await Promise.all([...warm.map((w) => this.discardWarm(w)), ...(opts.keepRunning ? [] : running.map((vm) => this.terminate(vm.ref)))]);
    await this.pool.close();
    this.cgroups.close();
  }

  private baseSpec(name: string, memoryMiB: number, vcpus: number): Pick<QemuSpec, 'name' | 'accel' | 'memoryMiB' | 'vcpus' | 'tap' | 'tcgTbSizeMiB'> {
    return {
      name,
      accel: this.accel.accel,
      memoryMiB,
      vcpus,
      tap: { ifname: GUEST.tap, mac: GUEST.mac },
      tcgTbSizeMiB: TCG_TB_MIB,
    };
  }
}

/** A restored QEMU and its connections, before it becomes a RunningVm. */
interface Restored {
  dir: string;
  net: VmNetwork;
  qemu: QemuProcess;
  qmp: QmpClient;
  agent: AgentClient;
  appLog: AppLog;
  t0: number;
  phases: Record<string, number>;
}

interface WarmVm extends Restored {
  /** Stops the pool's own supervision once the clone is handed out. */
  detach: () => void;
}

function appLogFile(dir: string, opts: AppLogOption): string | null {
  return opts.appLog === undefined ? vmFiles(dir).appLog : opts.appLog;
}

function mark(r: Restored, step: string): void {
  r.phases[step] = Math.round((performance.now() - r.t0) * 10) / 10;
}

/** Makes a restored VM that runs itself: clones are byte-identical, so each gets its own clock, entropy and name. */
async function identify(r: Restored, name: string): Promise<void> {
  await Promise.all([r.agent.setClock(), r.agent.reseed(), r.agent.identify(name)]);
  mark(r, 'identified');
}

/** Where a resume moves the checkpoint just before the guest runs again (see Engine.commitResume). */
function consumedCheckpoint(files: ReturnType<typeof vmFiles>): string {
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

async function dispose(r: Partial<Restored> & Pick<Restored, 'qemu'>): Promise<void> {
  r.agent?.close();
  r.qmp?.close();
  await r.appLog?.close();
  await r.qemu.kill();
}

/** Opens and drops one TCP connection (refused is fine). */
function poke(host: string, port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    const done = (): void => {
      s.destroy();
      resolve();
    };
    s.once('connect', done);
    s.once('error', done);
    s.setTimeout(1000, done);
  });
}

/** TCG's translation cache per VM; small keeps idle clones light. */
const TCG_TB_MIB = 32;

function canonicalSpec(accel: 'kvm' | 'tcg'): QemuSpec {
  return {
    name: 'x',
    accel,
    memoryMiB: 1,
    vcpus: 1,
    memPath: 'm',
    memShared: false,
    disk: 'd',
    qmpSocket: 'q',
    ctlSocket: 'c',
    logSocket: 'l',
    consoleLog: 'o',
    tap: { ifname: GUEST.tap, mac: GUEST.mac },
    tcgTbSizeMiB: TCG_TB_MIB,
    incoming: true,
  };
}

function checkSocketPaths(files: Record<string, string>): void {
  for (const p of Object.values(files)) {
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
      throw new CellaError('INVALID_ARGUMENT', `path ${p} is too long for a unix socket; use a shorter data directory`);
    }
  }
}

/** Awaits `p`, or after `ms` runs `onTimeout` (whose result or throw stands in); the timer never outlives the wait. */
async function withTimeout<T, U>(p: Promise<T>, ms: number, onTimeout: () => U | Promise<U>): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<U>((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        resolve(onTimeout());
      } catch (err) {
        reject(err);
      }
    }, ms);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}

function tail(file: string, bytes = 2000): string {
  try {
    const s = readFileSync(file, 'utf8');
    return s.slice(-bytes).trim() || '(empty)';
  } catch {
    return '(none)';
  }
}

/** Resolves once host:port accepts a TCP connection; `check` throws to give up early. */
export async function waitPort(host: string, port: number, deadline: number, check: () => void): Promise<void> {
  for (;;) {
    check();
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host, port });
      s.setTimeout(500);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
      s.once('timeout', () => {
        s.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new CellaError('APP_NOT_READY', `port ${port} did not accept connections in time`);
    await sleep(20);
  }
}
