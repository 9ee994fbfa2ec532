/**
 * A suspended VM's checkpoint without a RAM migration (ADR 0009): the pages
 * it dirtied are read straight from its QEMU's memory (`/proc/PID/mem`, where
 * the pagemap says they are private copies) and the device state is saved
 * alone (QMP `xen-save-devices-state`, which skips RAM). QEMU never reads the
 * clean RAM, so time and bytes follow the dirtied memory.
 *
 * On resume the pages are written into the new, paused QEMU's MAP_PRIVATE
 * mapping of the image's RAM file (becoming private copies again, as after a
 * migration), and then the device state is loaded through the usual incoming
 * migration, which needs RAM in place (virtio checks its rings against it).
 *
 * Layout (little endian): "CELLACP1", u32 runs, u32 0, u64 device stream
 * offset, u64 its length; runs × (u32 first page, u32 pages); the pages, run
 * after run; the device stream: a QEMU migration stream with no RAM section.
 * A checkpoint that starts with QEMU's own magic is the older, filtered
 * migration stream, and is loaded as it is.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { CellaError } from '../contract/index.js';
import { crashPoint } from '../host/index.js';
import { mappingsOf } from './pagemap.js';

const MAGIC = Buffer.from('CELLACP1', 'latin1');
const HEADER = 32;
const PAGE = 4096;
/** Pages per read or write: few system calls, bounded buffers. */
const CHUNK_PAGES = 1024;
/** The stream magic and version QEMU writes first ("QEVM", 3). */
const QEVM = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
const CONFIGURATION = 0x07;
const SUBSECTION = 0x05;
/**
 * An empty description section, which the loader expects after the end of a
 * migration's device state (it only skips it; a device-only save has none).
 */
const VMDESCRIPTION = Buffer.from([0x06, 0, 0, 0, 0]);

export interface Run {
  first: number;
  pages: number;
}

/** The runs of consecutive dirty pages in a pagemap verdict (one byte per page). */
export function dirtyRuns(dirty: Uint8Array): Run[] {
  const runs: Run[] = [];
  for (let i = 0; i < dirty.length; i++) {
    if (!dirty[i]) continue;
    const first = i;
    while (i + 1 < dirty.length && dirty[i + 1]) i++;
    runs.push({ first, pages: i - first + 1 });
  }
  return runs;
}

/** Where a page of the RAM file `memPath` is in the address space of `pid`. */
function addressOf(pid: number, memPath: string, sizeBytes: number): (page: number) => number {
  const segments = mappingsOf(pid, memPath);
  let covered = 0n;
  for (const s of segments) covered += s.end - s.start;
  if (covered < BigInt(sizeBytes)) throw new CellaError('QEMU_FAILED', `guest RAM mapping of ${memPath} not found in pid ${pid}`);
  return (page) => {
    const off = BigInt(page * PAGE);
    const s = segments.find((x) => off >= x.fileOffset && off < x.fileOffset + (x.end - x.start));
    if (!s) throw new CellaError('QEMU_FAILED', `page ${page} of ${memPath} is not mapped in pid ${pid}`);
    return Number(s.start + off - s.fileOffset);
  };
}

/** The run, cut into pieces of at most CHUNK_PAGES. */
function* chunks(runs: Run[]): Generator<Run> {
  for (const r of runs) for (let p = 0; p < r.pages; p += CHUNK_PAGES) yield { first: r.first + p, pages: Math.min(CHUNK_PAGES, r.pages - p) };
}

/**
 * The configuration section of a migration stream (`stream` starts with it
 * after the magic): a device-state-only save has none, but the incoming side
 * requires it. It is taken from the image's own device state, written by the
 * same QEMU with the same machine and capabilities.
 */
export function configurationSection(stream: Buffer): Buffer {
  if (!stream.subarray(0, 8).equals(QEVM) || stream[8] !== CONFIGURATION) throw invalid('the image device state has no configuration section');
  let at = 9;
  at += 4 + stream.readUInt32BE(at);
  while (stream[at] === SUBSECTION) {
    const name = stream.subarray(at + 2, at + 2 + (stream[at + 1] as number)).toString('latin1');
    at += 2 + (stream[at + 1] as number) + 4;
    if (name === 'configuration/capabilities') {
      const count = stream.readUInt32BE(at);
      at += 4;
      for (let i = 0; i < count; i++) at += 1 + (stream[at] as number);
    } else if (name === 'configuration/target-page-bits') at += 4;
    else if (name === 'configuration/uuid') at += 16;
    else throw invalid(`unknown configuration subsection ${name}`);
  }
  if (at > stream.length) throw invalid('configuration section is truncated');
  return stream.subarray(8, at);
}

/** Reads the first bytes of a file (enough for a stream's header and configuration). */
export function readHead(file: string, bytes = 4096): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    return buf.subarray(0, readSync(fd, buf, 0, bytes, 0));
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the checkpoint to `out` (already open): the `runs` of pages read from
 * the stopped QEMU `pid`, then its device state `devices` (a device-only
 * stream, magic first, awaited once the pages are copied: QEMU may save it
 * meanwhile) behind the configuration section `config`. Returns the bytes written.
 */
export async function writeCheckpoint(
  out: FileHandle,
  pid: number,
  memPath: string,
  sizeBytes: number,
  runs: Run[],
  config: Buffer,
  devices: Buffer | Promise<Buffer>,
): Promise<number> {
  const address = addressOf(pid, memPath, sizeBytes);
  let pages = 0;
  for (const r of runs) pages += r.pages;
  const pagesAt = HEADER + 8 * runs.length;
  const devOffset = pagesAt + pages * PAGE;
  const mem = await open(`/proc/${pid}/mem`, 'r');
  // Two buffers: the next chunk is read from guest RAM while the last one is written to the file.
  const bufs = [Buffer.alloc(CHUNK_PAGES * PAGE), Buffer.alloc(CHUNK_PAGES * PAGE)];
  let writing: Promise<unknown> = Promise.resolve();
  try {
    let pos = pagesAt;
    let k = 0;
    for (const c of chunks(runs)) {
      const buf = bufs[k++ % 2] as Buffer;
      const len = c.pages * PAGE;
      const { bytesRead } = await mem.read(buf, 0, len, address(c.first));
      if (bytesRead !== len) throw new CellaError('QEMU_FAILED', `short read of guest RAM from pid ${pid}`);
      await writing;
      writing = out.write(buf, 0, len, pos);
      pos += len;
      crashPoint('suspend:streaming');
    }
    await writing;
  } finally {
    await writing.catch(() => {});
    await mem.close();
  }
  const stream = await devices;
  if (!stream.subarray(0, 8).equals(QEVM)) throw invalid('the saved device state is not a QEMU stream');
  const tail = Buffer.concat([QEVM, config, stream.subarray(QEVM.length), VMDESCRIPTION]);
  const head = Buffer.alloc(pagesAt);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(runs.length, 8);
  head.writeBigUInt64LE(BigInt(devOffset), 16);
  head.writeBigUInt64LE(BigInt(tail.length), 24);
  runs.forEach((r, i) => {
    head.writeUInt32LE(r.first, HEADER + 8 * i);
    head.writeUInt32LE(r.pages, HEADER + 8 * i + 4);
  });
  await out.write(tail, 0, tail.length, devOffset);
  await out.write(head, 0, head.length, 0);
  return devOffset + tail.length;
}

/** Where a checkpoint's device stream lies; `pages` is false for the older format (a whole migration stream). */
export interface CheckpointLayout {
  pages: boolean;
  start: number;
  end?: number;
}

export function checkpointLayout(file: string): CheckpointLayout {
  const head = readHead(file, HEADER);
  if (head.subarray(0, 8).equals(QEVM)) return { pages: false, start: 0 };
  if (head.length < HEADER || !head.subarray(0, 8).equals(MAGIC)) throw new CellaError('SNAPSHOT_CORRUPT', `${file} is not a checkpoint`);
  const start = Number(head.readBigUInt64LE(16));
  return { pages: true, start, end: start + Number(head.readBigUInt64LE(24)) - 1 };
}

/** Writes a checkpoint's pages into the paused QEMU `pid` (its RAM mapping of `memPath`, `sizeBytes` long). */
export async function restorePages(file: string, pid: number, memPath: string, sizeBytes: number): Promise<void> {
  const cp = await open(file, 'r');
  try {
    const head = Buffer.alloc(HEADER);
    await cp.read(head, 0, HEADER, 0);
    const count = head.readUInt32LE(8);
    const table = Buffer.alloc(8 * count);
    if ((await cp.read(table, 0, table.length, HEADER)).bytesRead !== table.length) throw corrupt(file);
    const runs: Run[] = [];
    for (let i = 0; i < count; i++) runs.push({ first: table.readUInt32LE(8 * i), pages: table.readUInt32LE(8 * i + 4) });
    const limit = sizeBytes / PAGE;
    if (runs.some((r) => r.first + r.pages > limit)) throw corrupt(file);
    const address = addressOf(pid, memPath, sizeBytes);
    const mem = await open(`/proc/${pid}/mem`, 'r+');
    try {
      const buf = Buffer.alloc(CHUNK_PAGES * PAGE);
      let pos = HEADER + table.length;
      for (const c of chunks(runs)) {
        const len = c.pages * PAGE;
        if ((await cp.read(buf, 0, len, pos)).bytesRead !== len) throw corrupt(file);
        await mem.write(buf, 0, len, address(c.first));
        pos += len;
      }
    } finally {
      await mem.close();
    }
  } finally {
    await cp.close();
  }
}

function invalid(message: string): CellaError {
  return new CellaError('MIGRATION_STREAM_INVALID', `migration stream: ${message}`);
}

function corrupt(file: string): CellaError {
  return new CellaError('SNAPSHOT_CORRUPT', `${file} is truncated or damaged`);
}
