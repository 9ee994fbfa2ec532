/**
 * A builder VM: boots a root disk, runs build steps through cella-init, and
 * freezes the disk after each step into a layer file (a qcow2 whose backing
 * is the previous layer), so a later build can start from any finished step.
 * Its network is what the image's egress connectors allow (nothing without
 * them), and the build context arrives on a second, read-only disk that
 * cella-init mounts at /run/cella/build.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, chownSync, linkSync, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { AgentClient, type ExecOptions, type ExecResult, type ProcessSpec } from '../agent/index.js';
import { createOverlay } from '../disk/index.js';
import { CellaError } from '../contract/index.js';
import { GUEST, applyPolicy, type NetworkPolicy, type VmNetwork } from '../net/index.js';
import { BUILDER_UIDS, BUILDER_UID_BASE, QmpClient, guestCmdline, hostTscKhz, jailPath, type Jail, type QemuProcess } from '../vmm/index.js';
import { vmDir, type EngineCore } from './core.js';
import { checkSocketPaths, waitGuest } from './helpers.js';
import { spawnQemu } from './spawn.js';
import { vmFiles } from './vm.js';

/** Where the guest sees the build disk (cella-init's BUILD_DIR). */
export const BUILD_MOUNT = '/run/cella/build';

export interface BuilderSpec {
  /** qcow2 the builder writes to; its backing chain is the starting point. */
  top: string;
  /** Raw ext4 with the build context; mounted read-only. */
  buildDisk: string;
  memoryMiB?: number;
  vcpus?: number;
  /** Guest console, for a boot that fails. */
  consoleLog: string;
  bootTimeoutMs?: number;
  /** What RUN steps may reach (the image's egress connectors); absent: no network device at all. */
  network?: NetworkPolicy;
}

/**
 * The builder's QEMU runs jailed (Engine.startBuilder): its own uid, and its
 * folder `work` as its root when the layers are on the same file system.
 */
export class BuilderVm {
  private top: string;
  /** Layers handed to the jailed QEMU's uid; back to root once it is gone. */
  private readonly handedOver: string[] = [];

  constructor(
    spec: BuilderSpec,
    private readonly qemu: QemuProcess,
    private readonly qmp: QmpClient,
    private readonly agent: AgentClient,
    private readonly work: string,
    private readonly jail: Jail | undefined,
    /** Frees what the engine reserved for it (its uid, its network). */
    private readonly onClose: () => Promise<void>,
  ) {
    this.top = spec.top;
  }

  /** The file the running guest writes to. */
  get currentTop(): string {
    return this.top;
  }

  exec(spec: ProcessSpec, options: ExecOptions = {}): Promise<ExecResult> {
    if (!this.qemu.alive) throw new CellaError('QEMU_EXITED', `the builder VM is gone: ${this.qemu.describeExit()}`);
    return this.agent.exec(spec, options);
  }

  /**
   * Freezes what the guest wrote so far in the current top and continues on
   * `next`, a new qcow2 backed by it. The guest's caches are flushed first, so
   * the frozen file is a consistent file system. A jailed QEMU may create no
   * file and sees only its folder: `next` is made here, given to its uid and
   * linked into its folder for it to open (`mode: existing`).
   */
  async commit(next: string): Promise<void> {
    await this.agent.sync();
    await createOverlay(path.resolve(this.top), 'qcow2', next);
    let opened = next;
    if (this.jail) {
      chownSync(next, this.jail.uid, this.jail.gid);
      chmodSync(next, 0o600);
      this.handedOver.push(next);
      if (this.jail.chroot) {
        // A name of its own for as long as QEMU runs: when the next commit makes
        // this layer a read-only backing file, QEMU reopens it by that name.
        opened = path.join(this.work, `layer-${this.handedOver.length}.qcow2`);
        linkSync(next, opened);
      }
    }
    await this.qmp.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': jailPath(this.jail, opened), format: 'qcow2', mode: 'existing' });
    this.top = next;
  }

  /** Flushes and stops the VM; the current top is complete afterwards. */
  async close(): Promise<void> {
    try {
      if (this.qemu.alive) {
        await this.agent.sync().catch(() => {});
        await this.qmp.execute('quit').catch(() => {});
      }
    } finally {
      this.agent.close();
      this.qmp.close();
      await this.qemu.kill();
      rmSync(this.work, { recursive: true, force: true });
      for (const layer of this.handedOver) {
        try {
          chownSync(layer, 0, 0);
          chmodSync(layer, 0o644);
        } catch {
          // removed meanwhile (a failed step's layer)
        }
      }
      await this.onClose();
    }
  }
}

/**
 * Boots a builder VM on `spec.top` (see BuilderVm). It has a network device
 * only when `spec.network` is given, and dies with this process: a build is
 * never adopted by a restarted cellad. Its host entry ('builder') holds its
 * QEMU until it is closed, so reclaim and terminate never take it for a stray.
 */
export async function startBuilder(core: EngineCore, spec: BuilderSpec): Promise<BuilderVm> {
  const workName = `.builder-${randomUUID().slice(0, 8)}`;
  const work = vmDir(core, workName);
  const sockets = vmFiles(work);
  checkSocketPaths(sockets);
  mkdirSync(work);
  core.hosts.begin(workName, 'builder');
  const jail = builderJail(core, work, path.dirname(path.resolve(spec.top)));
  const memoryMiB = spec.memoryMiB ?? 1024;
  const vcpus = spec.vcpus ?? 1;
  let qemu: QemuProcess | undefined;
  let qmp: QmpClient | undefined;
  let agent: AgentClient | undefined;
  let net: VmNetwork | undefined;
  try {
    if (spec.network) {
      net = await core.networks.acquire();
      // Nothing reaches into a builder; what it may reach is its policy's egress.
      await applyPolicy(net, { ingress: [], egress: spec.network.egress });
    }
    qemu = await spawnQemu(
      core,
      {
        name: workName,
        accel: core.accel.accel,
        memoryMiB,
        vcpus,
        tcgTbSizeMiB: 64,
        memPath: path.join(work, 'mem'),
        memShared: false,
        boot: {
          kernel: core.guest.kernel,
          initrd: core.guest.initrd,
          cmdline: guestCmdline({ tscKhz: hostTscKhz(), guestCidr: GUEST.cidr, gateway: GUEST.gateway, buildDisk: '/dev/vdb' }),
        },
        disk: spec.top,
        buildDisk: spec.buildDisk,
        qmpSocket: sockets.qmp,
        ctlSocket: sockets.ctl,
        consoleLog: spec.consoleLog,
      },
      { name: workName, net, jail, outliveParent: false },
    );
    const q = qemu;
    qmp = await QmpClient.connect(sockets.qmp, 10_000, () => q.alive);
    agent = await AgentClient.connect(sockets.ctl);
    await waitGuest(agent, qemu, Date.now() + (spec.bootTimeoutMs ?? 60_000), spec.consoleLog);
    await agent.reseed();
    const network = net;
    return new BuilderVm(spec, qemu, qmp, agent, work, jail, async () => {
      if (jail) core.builderUids.delete(jail.uid);
      if (network) await core.networks.release(network).catch(() => {});
      core.hosts.settle(workName);
    });
  } catch (err) {
    agent?.close();
    qmp?.close();
    await qemu?.kill();
    rmSync(work, { recursive: true, force: true });
    if (jail) core.builderUids.delete(jail.uid);
    if (net) await core.networks.release(net).catch(() => {});
    core.hosts.settle(workName);
    throw err;
  }
}

/**
 * A builder's jail: a free builder uid, and its folder as its root when its
 * layers (in `layerDir`) are on the same file system, so each new layer can
 * be hard-linked in for QEMU to open (BuilderVm.commit); otherwise it keeps
 * the host's root and opens the layer by its path.
 */
function builderJail(core: EngineCore, work: string, layerDir: string): Jail | undefined {
  if (!core.jailed) return undefined;
  const sameFs = statSync(work).dev === statSync(layerDir).dev;
  let uid: number;
  do uid = BUILDER_UID_BASE + Math.floor(Math.random() * BUILDER_UIDS);
  while (core.builderUids.has(uid));
  core.builderUids.add(uid);
  if (!sameFs) core.log(`builder layers in ${layerDir} are on another file system than ${work}: the builder runs without a chroot`);
  return { uid, gid: uid, chroot: sameFs ? work : undefined };
}
