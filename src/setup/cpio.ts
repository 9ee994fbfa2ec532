/**
 * A writer for the cpio "newc" format (SVR4 without CRC, magic 070701), the
 * format the Linux kernel unpacks an initramfs from. Output is deterministic
 * (fixed inode numbers, owner root, mtime 0) so the initrd's hash only changes
 * when its contents do.
 */

import { CellaError } from '../contract/index.js';

export interface CpioEntry {
  /** Path inside the archive; a leading '/' is dropped, as GNU cpio does. */
  path: string;
  /** Full st_mode including the type bits, e.g. 0o040755, 0o100644, 0o120777. */
  mode: number;
  /** Contents of a regular file. */
  data?: Buffer;
  /** Target of a symlink. */
  target?: string;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

const TRAILER = 'TRAILER!!!';

function invalid(message: string): CellaError {
  return new CellaError('INVALID_ARGUMENT', message);
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** One record: 110-byte header, NUL-terminated name, both padded to 4, then the body padded to 4. */
function record(ino: number, mode: number, nlink: number, name: string, body: Buffer): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const fields = [ino, mode, 0, 0, nlink, 0, body.length, 0, 0, 0, 0, nameBytes.length, 0];
  const header = Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii');
  return Buffer.concat([header, nameBytes, Buffer.alloc(pad4(header.length + nameBytes.length)), body, Buffer.alloc(pad4(body.length))]);
}

function bodyOf(entry: CpioEntry): Buffer {
  switch (entry.mode & S_IFMT) {
    case S_IFDIR:
      if (entry.data !== undefined || entry.target !== undefined) throw invalid(`cpio: directory ${entry.path} cannot have data or a target`);
      return Buffer.alloc(0);
    case S_IFREG:
      if (entry.target !== undefined) throw invalid(`cpio: regular file ${entry.path} cannot have a target`);
      return entry.data ?? Buffer.alloc(0);
    case S_IFLNK:
      if (entry.target === undefined || entry.data !== undefined) throw invalid(`cpio: symlink ${entry.path} needs a target and no data`);
      return Buffer.from(entry.target, 'utf8');
    default:
      throw invalid(`cpio: unsupported file type in mode 0o${entry.mode.toString(8)} for ${entry.path}`);
  }
}

/**
 * Builds a newc archive. Entries are written in the given order; the kernel
 * does not create missing parents, so list directories before their contents.
 */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const seen = new Set<string>();
  entries.forEach((entry, i) => {
    const name = entry.path.replace(/^\/+/, '');
    if (name === '' || name === TRAILER) throw invalid(`cpio: invalid path ${JSON.stringify(entry.path)}`);
    if (seen.has(name)) throw invalid(`cpio: duplicate path ${name}`);
    seen.add(name);
    const isDir = (entry.mode & S_IFMT) === S_IFDIR;
    parts.push(record(i + 1, entry.mode, isDir ? 2 : 1, name, bodyOf(entry)));
  });
  parts.push(record(0, 0, 1, TRAILER, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
