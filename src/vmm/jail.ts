/**
 * Least privilege for QEMU, in the spirit of Firecracker's jailer, with what
 * QEMU itself offers: it opens its files, disks, tap and sockets as root, then,
 * just before the guest starts, chroots into the VM's folder and drops to a
 * uid of its own (`-chroot`, `-runas`), under its seccomp filter (`-sandbox`).
 *
 * Uids (gid = uid; no passwd entry is needed, nothing on the host owns them):
 * - VMs with a network namespace (templates, clones, warm clones, resumes):
 *   VM_UID_BASE + network slot, 200000..216383. A slot is held by one VM on
 *   the host at a time (its namespace name is the lock), so is its uid.
 * - Builders, which have no slot: BUILDER_UID_BASE + a free number of
 *   BUILDER_UIDS, 300000..365535, unique within one engine.
 */
import path from 'node:path';

export const VM_UID_BASE = 200_000;
export const BUILDER_UID_BASE = 300_000;
export const BUILDER_UIDS = 65_536;

export interface Jail {
  uid: number;
  gid: number;
  /** QEMU's root after start; absent: it keeps the host's. */
  chroot?: string;
}

export function vmJail(slot: number, dir: string): Jail {
  if (!Number.isInteger(slot) || slot < 0 || VM_UID_BASE + slot >= BUILDER_UID_BASE) throw new RangeError(`slot ${slot} has no uid`);
  const uid = VM_UID_BASE + slot;
  return { uid, gid: uid, chroot: dir };
}

/** `hostPath` as the jailed QEMU sees it once started: relative to its chroot. */
export function jailPath(jail: Jail | undefined, hostPath: string): string {
  if (!jail?.chroot) return hostPath;
  const rel = path.relative(jail.chroot, hostPath);
  if (rel === '..' || rel.startsWith('../') || path.isAbsolute(rel)) throw new RangeError(`${hostPath} is outside the jail ${jail.chroot}`);
  return `/${rel}`;
}
