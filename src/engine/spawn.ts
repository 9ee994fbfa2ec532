/**
 * The one way the engine starts a QEMU, for templates, clones, warm clones,
 * resumes and builders alike: in its network namespace (with the guest's tap)
 * when it has one, jailed, in a cgroup named after its folder, outliving
 * cellad when asked, and held by its folder's host entry from the moment it
 * exists (ADR 0007: reclaim and terminate never mistake it for a stray).
 */
import { GUEST, type VmNetwork } from '../net/index.js';
import { QemuProcess, buildQemuArgs, cgroupLimits, guestCmdline, vmJail, type Accel, type Jail, type QemuSpec } from '../vmm/index.js';
import { vmDir, type EngineCore } from './core.js';
import { vmFiles } from './vm.js';

/** TCG's translation cache per VM; small keeps idle clones light. */
const TCG_TB_MIB = 32;

export interface SpawnPlace {
  /** Its folder under `vms/`: the host entry that holds it (in flight), and its cgroup's name. */
  name: string;
  /** Its network namespace; absent for a builder that may reach nothing (no network device at all). */
  net?: VmNetwork;
  /** Undefined when the engine cannot jail (not root). */
  jail: Jail | undefined;
  /** It runs on when cellad dies, its stderr appended to the folder's `qemu.log`, for a restarted cellad to adopt. */
  outliveParent: boolean;
}

/** The parts of a QEMU spec that say what a VM is spawned with; `spawnQemu` adds the jail and, in a namespace, the tap. */
export type VmSpec = Omit<QemuSpec, 'jail' | 'tap'>;

export async function spawnQemu(core: EngineCore, spec: VmSpec, place: SpawnPlace): Promise<QemuProcess> {
  const { name, net, jail } = place;
  const qemu = await QemuProcess.spawn(buildQemuArgs({ ...spec, jail, ...(net ? { tap: { ifname: GUEST.tap, mac: GUEST.mac } } : {}) }), {
    spawner: core.spawner,
    binary: core.qemuBinary,
    ...(net ? { netns: net.netns } : {}),
    outliveParent: place.outliveParent ? { stderrFile: vmFiles(vmDir(core, name)).qemuLog } : undefined,
    cgroup: core.cgroups.create(name, cgroupLimits(spec)),
  });
  try {
    core.hosts.hold(name, qemu);
  } catch (err) {
    void qemu.kill();
    throw err;
  }
  return qemu;
}

/** A VM's jail: the uid of its network slot, its folder `dir` as its root. */
export function vmJailFor(core: EngineCore, net: VmNetwork, dir: string): Jail | undefined {
  return core.jailed ? vmJail(net.slot, dir) : undefined;
}

/** What every VM of a snapshot is spawned with, whatever its role. */
export function baseSpec(
  core: EngineCore,
  name: string,
  memoryMiB: number,
  vcpus: number,
): Pick<QemuSpec, 'name' | 'accel' | 'memoryMiB' | 'vcpus' | 'tcgTbSizeMiB'> {
  return { name, accel: core.accel.accel, memoryMiB, vcpus, tcgTbSizeMiB: TCG_TB_MIB };
}

/**
 * What a snapshot's fingerprint hashes besides versions and hashes: the QEMU command line (any change to the
 * device model changes what its state means) and the guest kernel's (the booted guest in its RAM was configured
 * by it: timers, sysctls). The TSC rate is left out: it is read from the host at each boot and varies a little.
 */
export function deviceModel(accel: Accel): { machine: string[]; cmdline: string } {
  return { machine: buildQemuArgs(canonicalSpec(accel)), cmdline: guestCmdline({ guestCidr: GUEST.cidr, gateway: GUEST.gateway }) };
}

function canonicalSpec(accel: Accel): QemuSpec {
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
