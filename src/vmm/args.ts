/**
 * The QEMU command line, built by one pure function so it can be golden-tested.
 * Templates boot a kernel; clones and resumes load device state (`incoming`)
 * and need no kernel: RAM already holds the booted guest.
 */

import type { Jail } from './jail.js';

export type Accel = 'kvm' | 'tcg';

/**
 * QEMU's seccomp filter. elevateprivileges stays allowed: QEMU 7.2 installs
 * the filter before -runas calls setgid/setuid, and denying them kills it at
 * start (SIGSYS). After -runas it has no capabilities left, NoNewPrivs is set
 * and spawn=deny forbids execve, so it has no way back to privileges anyway.
 */
export const SANDBOX = 'on,obsolete=deny,spawn=deny,resourcecontrol=deny';

export interface QemuSpec {
  name: string;
  accel: Accel;
  memoryMiB: number;
  vcpus: number;
  /** RAM backing file; `shared` maps it MAP_SHARED (templates), otherwise MAP_PRIVATE (clones). */
  memPath: string;
  memShared: boolean;
  /** Present when booting a kernel (templates, probes). */
  boot?: { kernel: string; initrd: string; cmdline: string };
  /** Root disk (qcow2); absent only for the accelerator probe. */
  disk?: string;
  /** Image builds: a read-only raw disk with the build context (the guest's /dev/vdb). */
  buildDisk?: string;
  qmpSocket: string;
  /** Control and log virtio-serial ports, as unix sockets QEMU listens on. */
  ctlSocket?: string;
  logSocket?: string;
  consoleLog: string;
  /** Tap device in the VM's network namespace. */
  tap?: { ifname: string; mac: string };
  incoming?: boolean;
  /** TCG translation cache size, MiB; bounds per-clone memory. */
  tcgTbSizeMiB?: number;
  /** Runs under the seccomp filter, as this uid, in this chroot (see jail.ts). */
  jail?: Jail;
}

/** QEMU option values escape a comma by doubling it. */
export function optValue(v: string): string {
  return v.replaceAll(',', ',,');
}

export function buildQemuArgs(spec: QemuSpec): string[] {
  const accel = spec.accel === 'kvm' ? 'kvm' : `tcg${spec.tcgTbSizeMiB ? `,tb-size=${spec.tcgTbSizeMiB}` : ''}`;
  // Each QEMU flag stays on one line with its value, hence the prettier-ignore marks here and in args.test.ts.
  // prettier-ignore
  const args = [
    '-name', spec.name,
    // No PIT, and (TCG) a LAPIC timer that runs on in idle (ARAT): it is the guest's only clock event device, so
    // with a trusted TSC (guestCmdline) the kernel stops its tick when idle instead of waking 250 times a second.
    // The TSC rate on the command line stands in for PIT calibration. pic off, rtc on.
    '-M', 'microvm,pit=off,pic=off,isa-serial=on,rtc=on,memory-backend=mem',
    '-accel', accel,
    '-cpu', spec.accel === 'kvm' ? 'host' : 'qemu64,+arat',
    '-m', `${spec.memoryMiB}M`,
    '-smp', String(spec.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-object', `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${optValue(spec.memPath)},share=${spec.memShared ? 'on' : 'off'}`,
    '-serial', `file:${optValue(spec.consoleLog)}`,
    '-qmp', `unix:${optValue(spec.qmpSocket)},server=on,wait=off`,
  ];
  if (spec.boot) args.push('-kernel', spec.boot.kernel, '-initrd', spec.boot.initrd, '-append', spec.boot.cmdline);
  if (spec.disk) {
    // auto-read-only=off: QEMU would otherwise reopen the image by path when it
    // drops write access at the end of a migration, and a pooled VM's folder is renamed.
    // prettier-ignore
    args.push(
      '-drive', `id=root,file=${optValue(spec.disk)},format=qcow2,if=none,cache=writeback,discard=unmap,auto-read-only=off`,
      '-device', 'virtio-blk-device,drive=root',
    );
  }
  if (spec.buildDisk) {
    // prettier-ignore
    args.push(
      '-drive', `id=build,file=${optValue(spec.buildDisk)},format=raw,if=none,read-only=on`,
      '-device', 'virtio-blk-device,drive=build',
    );
  }
  if (spec.ctlSocket || spec.logSocket) args.push('-device', 'virtio-serial-device,max_ports=4');
  if (spec.ctlSocket) {
    // prettier-ignore
    args.push(
      '-chardev', `socket,id=ctl,path=${optValue(spec.ctlSocket)},server=on,wait=off`,
      '-device', 'virtserialport,chardev=ctl,name=cella.ctl',
    );
  }
  if (spec.logSocket) {
    // prettier-ignore
    args.push(
      '-chardev', `socket,id=log,path=${optValue(spec.logSocket)},server=on,wait=off`,
      '-device', 'virtserialport,chardev=log,name=cella.log',
    );
  }
  if (spec.tap) {
    // prettier-ignore
    args.push(
      '-netdev', `tap,id=net0,ifname=${spec.tap.ifname},script=no,downscript=no`,
      '-device', `virtio-net-device,netdev=net0,mac=${spec.tap.mac}`,
    );
  }
  if (spec.incoming) args.push('-incoming', 'defer', '-S');
  if (spec.jail) {
    args.push('-sandbox', SANDBOX, '-runas', `${spec.jail.uid}:${spec.jail.gid}`);
    if (spec.jail.chroot) args.push('-chroot', spec.jail.chroot);
  }
  return args;
}

/**
 * What lets an idle guest sleep. A trusted TSC (no clocksource watchdog) allows high-resolution timers and so a
 * tick that stops when idle; the rest end periodic work that would wake it anyway: proactive compaction
 * (kcompactd, every 500 ms), PSI averages (every 2 s) and the lockup watchdog (every 4 s). An idle TCG guest
 * went from 250 timer interrupts a second to about 1.5.
 */
export const IDLE_PARAMS = ['tsc=reliable', 'sysctl.vm.compaction_proactiveness=0', 'psi=0', 'nowatchdog'] as const;

/** Kernel command line for a Cella guest. */
export function guestCmdline(opts: { tscKhz?: number; guestCidr: string; gateway: string; probe?: boolean; buildDisk?: string }): string {
  const parts = ['console=ttyS0', 'quiet', 'panic=-1', 'reboot=t', ...IDLE_PARAMS, `cella.ip=${opts.guestCidr}`, `cella.gw=${opts.gateway}`];
  // Without HPET/PM timer, TSC calibration under TCG hangs about 1 boot in 10 unless told the rate.
  if (opts.tscKhz) parts.push(`tsc_early_khz=${opts.tscKhz}`);
  if (opts.probe) parts.push('cella.probe=1');
  if (opts.buildDisk) parts.push(`cella.build=${opts.buildDisk}`);
  return parts.join(' ');
}
