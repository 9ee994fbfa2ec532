/**
 * Which accelerator really runs a guest here? /dev/kvm existing proves little:
 * under nested PVM a stock kernel dies on it (see DESIGN). So KVM is chosen
 * only if a probe guest boots to userspace on it; otherwise TCG, and the
 * reason is kept so callers can show it.
 */
import { constants, accessSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildQemuArgs, guestCmdline, type Accel } from './args.js';
import { QemuProcess } from './process.js';
import type { SpawnServer } from './spawn-server.js';

export interface AccelInfo {
  accel: Accel;
  /** Why this accelerator: the probe's outcome in words. */
  reason: string;
}

const PROBE_TIMEOUT_MS = 20_000;

export function hostTscKhz(): number | undefined {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : undefined;
}

async function bootProbe(kernel: string, initrd: string, spawner: SpawnServer, binary?: string): Promise<{ ok: boolean; detail: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-probe-'));
  try {
    const consoleLog = path.join(dir, 'console.log');
    const args = buildQemuArgs({
      name: 'cella-accel-probe',
      accel: 'kvm',
      memoryMiB: 128,
      vcpus: 1,
      memPath: path.join(dir, 'mem'),
      memShared: false,
      boot: { kernel, initrd, cmdline: guestCmdline({ guestCidr: '172.29.0.2/24', gateway: '172.29.0.1', probe: true }) },
      qmpSocket: path.join(dir, 'qmp.sock'),
      consoleLog,
    });
    const qemu = await QemuProcess.spawn(args, { spawner, binary });
    const timer = setTimeout(() => void qemu.kill(), PROBE_TIMEOUT_MS);
    await qemu.waitExit();
    clearTimeout(timer);
    let out = '';
    try {
      out = readFileSync(consoleLog, 'utf8');
    } catch {
      // no console output at all
    }
    if (out.includes('cella-init: probe ok')) return { ok: true, detail: 'probe guest booted on KVM' };
    const why = qemu.describeExit().split('\n').slice(0, 3).join(' ');
    return { ok: false, detail: `probe guest did not boot on KVM (${why || 'no output'})` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Probes once per host boot and guest kernel; the verdict is cached in
 * `cacheFile` because a failed KVM boot can take seconds.
 */
export async function detectAccel(opts: {
  kernel: string;
  initrd: string;
  spawner: SpawnServer;
  cacheFile: string;
  cacheKey: string;
  force?: Accel;
  qemuBinary?: string;
}): Promise<AccelInfo> {
  if (opts.force) return { accel: opts.force, reason: `forced by configuration (${opts.force})` };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: 'TCG: /dev/kvm is absent or not accessible' };
  }
  const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const key = `${bootId}:${opts.cacheKey}`;
  try {
    const cached = JSON.parse(readFileSync(opts.cacheFile, 'utf8')) as { key: string; info: AccelInfo };
    if (cached.key === key) return cached.info;
  } catch {
    // no cache yet
  }
  const probe = await bootProbe(opts.kernel, opts.initrd, opts.spawner, opts.qemuBinary);
  const info: AccelInfo = probe.ok ? { accel: 'kvm', reason: `KVM: ${probe.detail}` } : { accel: 'tcg', reason: `TCG: ${probe.detail}` };
  try {
    writeFileSync(opts.cacheFile, JSON.stringify({ key, info }));
  } catch {
    // an unwritable cache only costs a probe next time
  }
  return info;
}
