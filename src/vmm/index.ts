export { buildQemuArgs, guestCmdline, optValue, type Accel, type QemuSpec } from './args.js';
export { QmpClient, QmpLineParser, type QmpEvent } from './qmp.js';
export { QemuProcess, QEMU_BINARY, requireExecutable, type ExitInfo, type SpawnOptions } from './process.js';
export { listPids, openFiles, processArgs, processStartTime } from './procfs.js';
export { detectAccel, hostTscKhz, type AccelInfo } from './accel.js';
