/**
 * Which guest RAM pages has a clone written since launch? Its RAM is a
 * MAP_PRIVATE mapping of the image's RAM file: a page it never wrote is still
 * a page-cache page of that file, a page it wrote became a private anonymous
 * copy. /proc/PID/pagemap tells the two apart without touching guest memory.
 */
import { openSync, readSync, closeSync, readFileSync, realpathSync } from 'node:fs';
import { CellaError } from '../contract/index.js';

const PAGE = 4096;
/**
 * Bits 63 (present), 62 (swapped) and 61 (file page or shared) of a pagemap
 * entry, read as the top three bits of its upper 32-bit half: a 2 GiB guest
 * has half a million entries, and BigInt arithmetic on each cost 150-250 ms.
 */
const FLAGS_SHIFT = 29;
const PRESENT = 0b100;
const SWAPPED = 0b010;
const FILE_OR_SHARED = 0b001;

/** From the upper half of a pagemap entry: is the page a private copy (present and anonymous, or swapped out)? */
export function written(upper: number): boolean {
  const flags = upper >>> FLAGS_SHIFT;
  return (flags & (PRESENT | FILE_OR_SHARED)) === PRESENT || (flags & SWAPPED) !== 0;
}

interface Segment {
  start: bigint;
  end: bigint;
  fileOffset: bigint;
}

export function mappingsOf(pid: number, path: string): Segment[] {
  const target = realpathSync(path);
  const segments: Segment[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    // start-end perms offset dev inode path
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
    if (!m || m[4] !== target) continue;
    segments.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), fileOffset: BigInt(`0x${m[3]}`) });
  }
  return segments;
}

/**
 * Returns one byte per page of the `sizeBytes` RAM file mapped by `pid`:
 * 1 where the process holds a private copy (the guest wrote it), else 0.
 */
export function dirtyPages(pid: number, memPath: string, sizeBytes: number): Uint8Array {
  const pages = Math.ceil(sizeBytes / PAGE);
  const dirty = new Uint8Array(pages);
  const segments = mappingsOf(pid, memPath);
  let covered = 0n;
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    for (const s of segments) {
      const count = Number((s.end - s.start) / BigInt(PAGE));
      const firstPage = Number(s.fileOffset / BigInt(PAGE));
      // Entries as 32-bit halves (little endian: the upper half second), read straight into a typed array: a plain
      // loop over it stays fast even before the JIT warms up, where readUInt32LE or BigInt per entry did not.
      const entries = new Uint32Array(count * 2);
      const read = readSync(fd, entries, 0, entries.byteLength, Number((s.start / BigInt(PAGE)) * 8n));
      if (read !== entries.byteLength) throw new CellaError('QEMU_FAILED', `short pagemap read for pid ${pid}`);
      const n = Math.min(count, pages - firstPage);
      for (let i = 0; i < n; i++) if (written(entries[2 * i + 1] as number)) dirty[firstPage + i] = 1;
      covered += s.end - s.start;
    }
  } finally {
    closeSync(fd);
  }
  if (covered < BigInt(sizeBytes)) {
    throw new CellaError('QEMU_FAILED', `guest RAM mapping of ${memPath} not found in pid ${pid} (covered ${covered} of ${sizeBytes} bytes)`);
  }
  return dirty;
}
