/**
 * Disks: an image's root filesystem is a raw ext4 file built from a directory
 * tree (no mount needed); every VM writes to its own qcow2 overlay.
 */
import { constants, copyFileSync, statSync } from 'node:fs';
import { CellaError, setupMissing } from '../contract/index.js';
import { run } from '../host/index.js';
import { requireExecutable } from '../vmm/index.js';

const MKFS = '/usr/sbin/mkfs.ext4';
const QEMU_IMG = '/usr/bin/qemu-img';

/** Builds an ext4 image of `sizeMiB` holding the tree at `dir`. */
/** `inodeRatio`: bytes per inode; large sparse disks want fewer inode tables to write. */
export async function ext4FromDir(dir: string, out: string, sizeMiB: number, label = 'cella-root', opts: { inodeRatio?: number } = {}): Promise<void> {
  requireExecutable(MKFS, 'mkfs.ext4 (e2fsprogs)');
  try {
    statSync(dir);
  } catch {
    throw setupMissing('root filesystem tree', dir);
  }
  // No journal checksum tricks: defaults, but no lazy init so the guest never pays for it.
  const ratio = opts.inodeRatio ? ['-i', String(opts.inodeRatio)] : [];
  await run(MKFS, ['-q', '-F', '-L', label, ...ratio, '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', dir, out, `${sizeMiB}M`], {
    code: 'DISK_SETUP_FAILED',
  });
}

/** A qcow2 overlay whose writes stay in `out` and whose reads fall through to `backing`. */
export async function createOverlay(backing: string, backingFormat: 'raw' | 'qcow2', out: string): Promise<void> {
  requireExecutable(QEMU_IMG, 'qemu-img (qemu-utils)');
  await run(QEMU_IMG, ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', backing, '-F', backingFormat, out], {
    code: 'DISK_SETUP_FAILED',
  });
}

/**
 * A new VM's overlay is a copy of an empty overlay made once per image:
 * a file copy is far cheaper than running qemu-img on the launch path.
 */
export function copyOverlay(template: string, out: string): void {
  try {
    copyFileSync(template, out, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
  } catch (err) {
    throw new CellaError('DISK_SETUP_FAILED', `cannot create disk ${out}: ${(err as Error).message}`, { cause: err });
  }
}

/** Bytes a file occupies on disk (sparse files count only what they hold). */
export function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}
