/**
 * Capturing an image snapshot (see snapshot.ts): a template VM boots the
 * kernel with its RAM on a shared file (`mem`), starts the app, and once the
 * app is ready its device state is saved with x-ignore-shared: the RAM file is
 * the snapshot's memory, and only ~65 KiB of device state is written.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fdatasyncSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { AgentClient, type ProcessSpec } from '../agent/index.js';
import { CellaError } from '../contract/index.js';
import { allocatedBytes, createOverlay } from '../disk/index.js';
import { GUEST } from '../net/index.js';
import { QmpClient, guestCmdline, hostTscKhz, processJail, type QemuProcess } from '../vmm/index.js';
import { vmDir, type EngineCore } from './core.js';
import { checkSocketPaths, tail, waitGuest, waitPort, withTimeout } from './helpers.js';
import { saveState } from './migrate.js';
import { SNAPSHOT_FORMAT, sha256, snapshotFiles, writeManifest, type SnapshotManifest } from './snapshot.js';
import { baseSpec, spawnQemu, vmJailFor } from './spawn.js';
import { AppLog, vmFiles } from './vm.js';

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

export async function createSnapshot(core: EngineCore, input: SnapshotSpec): Promise<SnapshotManifest> {
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
  const work = vmDir(core, workName);
  const sockets = vmFiles(work);
  checkSocketPaths(sockets);
  rmSync(files.mem, { force: true });
  rmSync(files.disk, { force: true });
  await createOverlay(spec.rootfs, 'raw', files.disk);

  const vcpus = spec.vcpus ?? 1;
  const net = await core.networks.acquire();
  const started = Date.now();
  let qemu: QemuProcess | undefined;
  let qmp: QmpClient | undefined;
  let agent: AgentClient | undefined;
  let appLog: AppLog | undefined;
  core.hosts.begin(workName, 'template');
  try {
    mkdirSync(work);
    qemu = await spawnQemu(
      core,
      {
        ...baseSpec(core, `template-${path.basename(spec.dir)}`, spec.memoryMiB, vcpus),
        memPath: files.mem,
        memShared: true,
        boot: {
          kernel: core.guest.kernel,
          initrd: core.guest.initrd,
          cmdline: guestCmdline({ tscKhz: hostTscKhz(), guestCidr: GUEST.cidr, gateway: GUEST.gateway }),
        },
        disk: files.disk,
        qmpSocket: sockets.qmp,
        ctlSocket: sockets.ctl,
        logSocket: sockets.log,
        consoleLog: record.console,
      },
      { name: workName, net, jail: vmJailFor(core, net, work), outliveParent: core.outliveParent },
    );
    const q = qemu;
    qmp = await QmpClient.connect(sockets.qmp, 10_000, () => q.alive);
    agent = await AgentClient.connect(sockets.ctl);
    appLog = await AppLog.connect(sockets.log, record.appLog);
    if (spec.onLog) appLog.on('data', spec.onLog);
    const deadline = started + (spec.readyTimeoutMs ?? 60_000);
    await waitGuest(agent, qemu, deadline, record.console);
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
      fingerprint: core.fingerprint,
      accel: core.accel.accel,
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
    await core.networks.release(net);
    rmSync(work, { recursive: true, force: true });
    core.hosts.settle(workName);
  }
}
