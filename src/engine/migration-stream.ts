/**
 * Filters a QEMU (7.2) migration stream so that a suspended VM's checkpoint
 * holds only the RAM pages it changed since it was launched from its image.
 *
 * A clone maps the image's RAM file MAP_PRIVATE, so every page it never wrote
 * is still the image's page. When it is resumed, the new QEMU maps the same
 * file again: a page missing from the stream keeps the image's content. So the
 * pages of the guest RAM block that the caller marks clean are dropped, and
 * only dirty pages (plus all device state) are written.
 *
 * Only the RAM section is parsed. Once the first non-iterative section (device
 * state) starts, everything up to the end is copied verbatim. Anything this
 * parser does not understand is refused rather than guessed at.
 */
import { CellaError } from '../contract/index.js';

const MAGIC = 0x5145564d; // "QEVM"
const VERSION = 3;
const PAGE_SIZE = 4096;

const Section = { START: 0x01, PART: 0x02, END: 0x03, FULL: 0x04, SUBSECTION: 0x05, COMMAND: 0x06, CONFIGURATION: 0x07, EOF: 0x08, FOOTER: 0x7e } as const;
const RamFlag = { ZERO: 0x02, MEM_SIZE: 0x04, PAGE: 0x08, EOS: 0x10, CONTINUE: 0x20 } as const;
const FLAG_MASK = 0xfff;
const FLAG_MASK_BIG = 0xfffn;
/** The largest page record: header, a block name (length byte and up to 255 bytes), a page. */
const RECORD_MAX = 8 + 256 + PAGE_SIZE;
const KNOWN_FLAGS = RamFlag.ZERO | RamFlag.MEM_SIZE | RamFlag.PAGE | RamFlag.EOS | RamFlag.CONTINUE;

export interface FilterStats {
  /** Page records (ZERO or PAGE) seen in the input. */
  pagesIn: number;
  /** Page records written to the output. */
  pagesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** RAM blocks announced by the stream, id → length in bytes. */
  blocks: Map<string, number>;
}

/** Decides whether a page of `block` at byte `offset` must be kept. */
export type KeepPage = (block: string, offset: number) => boolean;

function invalid(message: string): CellaError {
  return new CellaError('MIGRATION_STREAM_INVALID', `migration stream: ${message}`);
}

/** Pull-based reader over an async byte source. */
class Reader {
  private chunks: Buffer[] = [];
  private head = 0; // offset into chunks[0]
  private available = 0;
  private done = false;
  bytesRead = 0;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<void> {
    while (this.available < n) {
      if (this.done) throw invalid(`truncated (needed ${n} more bytes, have ${this.available})`);
      const r = await this.source.next();
      if (r.done) {
        this.done = true;
        continue;
      }
      if (r.value.length) {
        this.chunks.push(r.value);
        this.available += r.value.length;
      }
    }
  }

  /**
   * Buffers at least `n` bytes, or all that is left of the stream. The reads
   * that follow, up to `n` bytes, may then be synchronous: a page record is
   * parsed without a promise per field (the filter's cost is per record).
   */
  ensure(n: number): Promise<void> | undefined {
    if (this.available >= n || this.done) return undefined;
    // Fewer bytes may be left: a read past them reports the truncation.
    return this.fill(n).catch(() => {});
  }

  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.readSync(n);
  }

  /** `n` bytes already buffered (see ensure); throws if the stream ended before them. */
  readSync(n: number): Buffer {
    if (this.available < n) throw invalid(`truncated (needed ${n} more bytes, have ${this.available})`);
    this.bytesRead += n;
    this.available -= n;
    const first = this.chunks[0] as Buffer;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let w = 0;
    while (w < n) {
      const c = this.chunks[0] as Buffer;
      const take = Math.min(c.length - this.head, n - w);
      c.copy(out, w, this.head, this.head + take);
      w += take;
      this.head += take;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    return out;
  }

  async u8(): Promise<number> {
    return (await this.read(1)).readUInt8(0);
  }

  async u16(): Promise<number> {
    return (await this.read(2)).readUInt16BE(0);
  }

  async u32(): Promise<number> {
    return (await this.read(4)).readUInt32BE(0);
  }

  async u64(): Promise<bigint> {
    return (await this.read(8)).readBigUInt64BE(0);
  }

  async str(): Promise<string> {
    return (await this.read(await this.u8())).toString('latin1');
  }

  strSync(): string {
    return this.readSync(this.readSync(1).readUInt8(0)).toString('latin1');
  }

  async peek(): Promise<number | undefined> {
    try {
      await this.fill(1);
    } catch {
      return undefined;
    }
    return (this.chunks[0] as Buffer).readUInt8(this.head);
  }

  /** Everything left, as it arrives. */
  async *rest(): AsyncGenerator<Buffer> {
    if (this.chunks.length) {
      const first = (this.chunks[0] as Buffer).subarray(this.head);
      const others = this.chunks.slice(1);
      this.chunks = [];
      this.head = 0;
      this.available = 0;
      for (const c of [first, ...others]) {
        this.bytesRead += c.length;
        yield c;
      }
    }
    while (!this.done) {
      const r = await this.source.next();
      if (r.done) break;
      this.bytesRead += r.value.length;
      yield r.value;
    }
    this.done = true;
  }
}

function u8(n: number): Buffer {
  return Buffer.from([n]);
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}
function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n, 0);
  return b;
}
function str(s: string): Buffer {
  return Buffer.concat([u8(s.length), Buffer.from(s, 'latin1')]);
}

/**
 * Copies `input` to `write`, dropping the page records that `keep` rejects.
 * `write` receives buffers in order; it may be called with slices of the input.
 */
export async function filterMigrationStream(input: AsyncIterable<Buffer>, write: (b: Buffer) => void | Promise<void>, keep: KeepPage): Promise<FilterStats> {
  const r = new Reader(input[Symbol.asyncIterator]());
  const stats: FilterStats = { pagesIn: 0, pagesOut: 0, bytesIn: 0, bytesOut: 0, blocks: new Map() };
  const emit = async (b: Buffer): Promise<void> => {
    stats.bytesOut += b.length;
    await write(b);
  };
  /** For the page loop: a promise only when `write` returns one, so that a page costs no await. */
  const emitSync = (b: Buffer): void | Promise<void> => {
    stats.bytesOut += b.length;
    return write(b);
  };

  if ((await r.u32()) !== MAGIC) throw invalid('bad magic (not a QEMU migration stream)');
  const version = await r.u32();
  if (version !== VERSION) throw invalid(`unsupported stream version ${version}`);
  await emit(Buffer.concat([u32(MAGIC), u32(VERSION)]));

  let ignoreShared = false;
  let ramSection: number | undefined;
  let lastInBlock: string | undefined; // block named by the last record read
  let lastOutBlock: string | undefined; // block named by the last record written

  const readFooter = async (id: number): Promise<void> => {
    if ((await r.peek()) !== Section.FOOTER) return;
    await r.u8();
    const fid = await r.u32();
    if (fid !== id) throw invalid(`footer for section ${fid} closes section ${id}`);
    await emit(Buffer.concat([u8(Section.FOOTER), u32(id)]));
  };

  const ramRecords = async (): Promise<void> => {
    for (;;) {
      // Room for the largest page record (header, block name, page): it is then read without awaiting.
      const filling = r.ensure(RECORD_MAX);
      if (filling) await filling;
      const head = r.readSync(8);
      const low = head.readUInt32BE(4);
      const flags = low & FLAG_MASK;
      if (flags & (RamFlag.ZERO | RamFlag.PAGE) && !(flags & ~KNOWN_FLAGS) && !(flags & RamFlag.MEM_SIZE)) {
        if (!(flags & RamFlag.CONTINUE)) lastInBlock = r.strSync();
        const block = lastInBlock;
        if (block === undefined) throw invalid('page continues a block that was never named');
        const payload = r.readSync(flags & RamFlag.PAGE ? PAGE_SIZE : 1);
        stats.pagesIn++;
        const addr = head.readUInt32BE(0) * 2 ** 32 + (low - flags);
        if (!keep(block, addr)) continue;
        stats.pagesOut++;
        const out = Buffer.from(head);
        // >>> 0: bitwise results are signed, and a page at 2 GiB or above has the top bit set.
        out.writeUInt32BE(((low & ~RamFlag.CONTINUE) | (block === lastOutBlock ? RamFlag.CONTINUE : 0)) >>> 0, 4);
        const named = block === lastOutBlock ? undefined : str(block);
        lastOutBlock = block;
        // One copy: what is queued for writing holds no slice of a larger input chunk.
        const w = emitSync(Buffer.concat(named ? [out, named, payload] : [out, payload]));
        if (w) await w;
        continue;
      }
      const header = head.readBigUInt64BE(0);
      const addr = header & ~FLAG_MASK_BIG;
      if (flags & ~KNOWN_FLAGS) throw invalid(`unsupported RAM flags 0x${flags.toString(16)} (compression or RDMA?)`);
      if (flags & RamFlag.MEM_SIZE) {
        const parts: Buffer[] = [u64(header)];
        let total = addr;
        while (total > 0n) {
          const id = await r.str();
          const length = await r.u64();
          stats.blocks.set(id, Number(length));
          parts.push(str(id), u64(length));
          if (ignoreShared) parts.push(await r.read(8));
          if (length > total || length === 0n) throw invalid(`RAM block ${id} length ${length} does not fit the announced total`);
          total -= length;
        }
        await emit(Buffer.concat(parts));
        continue;
      }
      if (flags & RamFlag.EOS) {
        await emit(u64(header));
        return;
      }
      throw invalid(`RAM record with no known flag (0x${flags.toString(16)})`);
    }
  };

  for (;;) {
    const type = await r.u8();
    switch (type) {
      case Section.CONFIGURATION: {
        const name = await r.read(await r.u32());
        const parts = [u8(type), u32(name.length), name];
        while ((await r.peek()) === Section.SUBSECTION) {
          await r.u8();
          const sub = await r.str();
          const subVersion = await r.u32();
          parts.push(u8(Section.SUBSECTION), str(sub), u32(subVersion));
          if (sub === 'configuration/capabilities') {
            const count = await r.u32();
            parts.push(u32(count));
            for (let i = 0; i < count; i++) {
              const cap = await r.str();
              if (cap === 'x-ignore-shared') ignoreShared = true;
              parts.push(str(cap));
            }
          } else if (sub === 'configuration/target-page-bits') {
            const bits = await r.u32();
            if (bits !== 12) throw invalid(`target page bits ${bits}`);
            parts.push(u32(bits));
          } else if (sub === 'configuration/uuid') {
            parts.push(await r.read(16));
          } else {
            throw invalid(`unknown configuration subsection ${sub}`);
          }
        }
        await emit(Buffer.concat(parts));
        break;
      }
      case Section.START: {
        const id = await r.u32();
        const name = await r.str();
        const instance = await r.u32();
        const ver = await r.u32();
        await emit(Buffer.concat([u8(type), u32(id), str(name), u32(instance), u32(ver)]));
        if (name !== 'ram') throw invalid(`unexpected iterative section ${name}`);
        ramSection = id;
        await ramRecords();
        await readFooter(id);
        break;
      }
      case Section.PART:
      case Section.END: {
        const id = await r.u32();
        if (id !== ramSection) throw invalid(`iterative section ${id} is not RAM`);
        await emit(Buffer.concat([u8(type), u32(id)]));
        await ramRecords();
        await readFooter(id);
        break;
      }
      case Section.COMMAND: {
        const cmd = await r.u16();
        const len = await r.u16();
        const data = await r.read(len);
        const head = Buffer.alloc(5);
        head.writeUInt8(type, 0);
        head.writeUInt16BE(cmd, 1);
        head.writeUInt16BE(len, 3);
        await emit(Buffer.concat([head, data]));
        break;
      }
      case Section.FULL:
      case Section.EOF: {
        // Device state: not self-describing, and no RAM follows. Copy the rest.
        await emit(u8(type));
        for await (const chunk of r.rest()) await emit(chunk);
        stats.bytesIn = r.bytesRead;
        if (type === Section.FULL && ramSection === undefined) throw invalid('no RAM section');
        return stats;
      }
      default:
        throw invalid(`unknown section type 0x${type.toString(16)} at byte ${r.bytesRead - 1}`);
    }
  }
}
