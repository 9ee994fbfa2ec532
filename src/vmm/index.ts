export { IDLE_PARAMS, SANDBOX, buildQemuArgs, guestCmdline, optValue, type Accel, type QemuSpec } from './args.js';
export { Cgroup, Cgroups, QEMU_OVERHEAD_MIB, cgroupLimits, detectLayout, type CgroupLayout, type CgroupLimits, type Controller } from './cgroup.js';
export { BUILDER_UIDS, BUILDER_UID_BASE, VM_UID_BASE, jailPath, vmJail, type Jail } from './jail.js';
export { QmpClient, QmpLineParser, type QmpEvent } from './qmp.js';
export { QemuProcess, QEMU_BINARY, requireExecutable, type ExitInfo, type SpawnOptions } from './process.js';
export { SpawnServer } from './spawn-server.js';
export { listPids, openFiles, processArgs, processJail, processStartTime } from './procfs.js';
export { detectAccel, hostTscKhz, type AccelInfo } from './accel.js';
