/**
 * An image snapshot on disk: <imageDir>/{mem, devstate, disk.qcow2,
 * overlay.qcow2, snapshot.json}. snapshot.json is written last, so its presence
 * means the snapshot is complete. Before anything is launched from it, it is
 * checked: made by this QEMU, kernel and agent (fingerprint), whole (sizes and
 * the device state's hash). A bad snapshot is refused before a QEMU starts.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { CellaError } from '../contract/index.js';
import type { Accel } from '../vmm/index.js';

export const SNAPSHOT_FORMAT = 1;

export interface SnapshotManifest {
  format: typeof SNAPSHOT_FORMAT;
  /** Hash of everything a restore depends on: QEMU version, machine, kernel, initrd, accelerator. */
  fingerprint: string;
  accel: Accel;
  memoryMiB: number;
  vcpus: number;
  appPort: number;
  devstateSha256: string;
  devstateBytes: number;
  /** Bytes of the RAM file actually allocated (it is sparse). */
  memAllocatedBytes: number;
  diskAllocatedBytes: number;
  createdAt: string;
  templateBootMs: number;
  captureMs: number;
}

export const snapshotFiles = (dir: string) => ({
  mem: path.join(dir, 'mem'),
  devstate: path.join(dir, 'devstate'),
  disk: path.join(dir, 'disk.qcow2'),
  overlay: path.join(dir, 'overlay.qcow2'),
  manifest: path.join(dir, 'snapshot.json'),
});

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function writeManifest(dir: string, m: SnapshotManifest): void {
  const file = snapshotFiles(dir).manifest;
  writeFileSync(`${file}.tmp`, `${JSON.stringify(m, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

function corrupt(dir: string, why: string): CellaError {
  return new CellaError('SNAPSHOT_CORRUPT', `snapshot ${dir} is unusable: ${why}`, { details: { snapshot: dir } });
}

/** Reads and checks a snapshot; throws SNAPSHOT_CORRUPT or SNAPSHOT_INCOMPATIBLE. */
export function openSnapshot(dir: string, fingerprint: string): SnapshotManifest {
  const f = snapshotFiles(dir);
  let m: SnapshotManifest;
  try {
    m = JSON.parse(readFileSync(f.manifest, 'utf8')) as SnapshotManifest;
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    if (missing) throw new CellaError('NOT_FOUND', `no snapshot at ${dir}`, { details: { snapshot: dir } });
    throw corrupt(dir, `snapshot.json unreadable (${(err as Error).message})`);
  }
  if (m.format !== SNAPSHOT_FORMAT) throw corrupt(dir, `unknown format ${String(m.format)}`);
  if (m.fingerprint !== fingerprint) {
    throw new CellaError(
      'SNAPSHOT_INCOMPATIBLE',
      `snapshot ${dir} was made by a different QEMU, guest kernel, agent or accelerator (${m.accel}); rebuild the image`,
      { details: { snapshot: dir, accel: m.accel } },
    );
  }
  for (const file of [f.mem, f.devstate, f.disk, f.overlay]) {
    try {
      statSync(file);
    } catch {
      throw corrupt(dir, `${path.basename(file)} is missing`);
    }
  }
  if (statSync(f.mem).size !== m.memoryMiB * 1024 * 1024) throw corrupt(dir, 'RAM file has the wrong size');
  const devstate = readFileSync(f.devstate);
  if (devstate.length !== m.devstateBytes || sha256(devstate) !== m.devstateSha256) throw corrupt(dir, 'device state does not match its checksum');
  return m;
}
