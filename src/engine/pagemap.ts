/**
 * Which guest RAM pages has a clone written since launch? Its RAM is a
 * MAP_PRIVATE mapping of the image's RAM file: a page it never wrote is still
 * a page-cache page of that file, a page it wrote became a private anonymous
 * copy. /proc/PID/pagemap tells the two apart without touching guest memory.
 */
import { openSync, readSync, closeSync, readFileSync, realpathSync } from 'node:fs';
import { CellaError } from '../contract/index.js';

const PAGE = 4096;
const PRESENT = 1n << 63n;
const SWAPPED = 1n << 62n;
const FILE_OR_SHARED = 1n << 61n;

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
      const buf = Buffer.alloc(count * 8);
      const read = readSync(fd, buf, 0, buf.length, Number((s.start / BigInt(PAGE)) * 8n));
      if (read !== buf.length) throw new CellaError('QEMU_FAILED', `short pagemap read for pid ${pid}`);
      for (let i = 0; i < count && firstPage + i < pages; i++) {
        const e = buf.readBigUInt64LE(i * 8);
        if (((e & PRESENT) !== 0n && (e & FILE_OR_SHARED) === 0n) || (e & SWAPPED) !== 0n) dirty[firstPage + i] = 1;
      }
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
