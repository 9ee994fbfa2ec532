/**
 * Framing of the cella-init protocol (mirror of guest/init/protocol.h).
 * Frame: u32 body length, u8 type, u8 stream, u16 reserved, u32 id, body (all LE).
 */

export const PROTOCOL_VERSION = 2;
export const HEADER_LEN = 12;
export const MAX_BODY = 1 << 20;
/** The most body bytes cella-init puts in one frame it sends (CELLA_MAX_OUT). */
export const MAX_GUEST_BODY = 16384;

export const Msg = {
  PING: 1,
  START: 2,
  EXEC: 3,
  SET_CLOCK: 4,
  RESEED: 5,
  SYNC: 6,
  IDENTIFY: 7,
  SIGNAL: 8,
  PTY_OPEN: 9,
  PTY_IN: 10,
  PTY_RESIZE: 11,
  PTY_CLOSE: 12,
  HELLO: 64,
  OK: 65,
  ERROR: 66,
  EXEC_OUT: 67,
  EXEC_EXIT: 68,
  APP_EXIT: 69,
  LOG: 70,
  PONG: 71,
  PTY_OUT: 72,
  PTY_EXIT: 73,
  ACTIVITY: 74,
  SUSPEND_REQUEST: 75,
} as const;
export type MsgType = (typeof Msg)[keyof typeof Msg];

export const Tag = { ARG: 1, ENV: 2, CWD: 3, UID: 4, GID: 5, STDIN: 6, WINSIZE: 7 } as const;

export interface Frame {
  type: number;
  stream: number;
  id: number;
  body: Buffer;
}

/** What to run in the guest: the app (START) or a command (EXEC). */
export interface ProcessSpec {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  gid?: number;
  stdin?: Buffer;
}

export function encodeFrame(type: number, id: number, body: Buffer = Buffer.alloc(0), stream = 0): Buffer {
  if (body.length > MAX_BODY) throw new RangeError(`frame body of ${body.length} bytes exceeds ${MAX_BODY}`);
  const head = Buffer.alloc(HEADER_LEN);
  head.writeUInt32LE(body.length, 0);
  head.writeUInt8(type, 4);
  head.writeUInt8(stream, 5);
  head.writeUInt32LE(id >>> 0, 8);
  return Buffer.concat([head, body]);
}

/** Accumulates bytes and yields whole frames; throws on a frame the guest could never have sent. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const frames: Frame[] = [];
    let off = 0;
    while (this.buf.length - off >= HEADER_LEN) {
      const len = this.buf.readUInt32LE(off);
      if (len > MAX_BODY) throw new RangeError(`frame body length ${len} exceeds ${MAX_BODY}`);
      if (this.buf.length - off < HEADER_LEN + len) break;
      frames.push({
        type: this.buf.readUInt8(off + 4),
        stream: this.buf.readUInt8(off + 5),
        id: this.buf.readUInt32LE(off + 8),
        body: this.buf.subarray(off + HEADER_LEN, off + HEADER_LEN + len),
      });
      off += HEADER_LEN + len;
    }
    this.buf = this.buf.subarray(off);
    return frames;
  }
}

function tlv(tag: number, value: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(tag, 0);
  head.writeUInt32LE(value.length, 1);
  return Buffer.concat([head, value]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

/** What to run on a terminal (PTY_OPEN): argv may be empty or absent for /bin/sh; rows and cols are its size. */
export interface PtySpec extends Omit<ProcessSpec, 'argv'> {
  argv?: string[];
  rows: number;
  cols: number;
}

export function encodeSpec(spec: ProcessSpec): Buffer {
  if (spec.argv.length === 0) throw new RangeError('argv must not be empty');
  return encodeRecords(spec);
}

function encodeRecords(spec: Omit<ProcessSpec, 'argv'> & { argv?: string[] }): Buffer {
  const parts: Buffer[] = [];
  for (const a of spec.argv ?? []) parts.push(tlv(Tag.ARG, Buffer.from(a)));
  for (const [k, v] of Object.entries(spec.env ?? {})) parts.push(tlv(Tag.ENV, Buffer.from(`${k}=${v}`)));
  if (spec.cwd !== undefined) parts.push(tlv(Tag.CWD, Buffer.from(spec.cwd)));
  if (spec.uid !== undefined) parts.push(tlv(Tag.UID, u32(spec.uid)));
  if (spec.gid !== undefined) parts.push(tlv(Tag.GID, u32(spec.gid)));
  if (spec.stdin !== undefined) parts.push(tlv(Tag.STDIN, spec.stdin));
  return Buffer.concat(parts);
}

/** Terminal size as cella-init reads it (TAG_WINSIZE, PTY_RESIZE): u16 rows, u16 cols. */
export function encodeWinsize(rows: number, cols: number): Buffer {
  for (const [name, v] of [['rows', rows], ['cols', cols]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 0xffff) throw new RangeError(`${name} must be an integer in 1..65535, got ${v}`);
  }
  const b = Buffer.alloc(4);
  b.writeUInt16LE(rows, 0);
  b.writeUInt16LE(cols, 2);
  return b;
}

/** PTY_OPEN body: the spec's records plus its size. */
export function encodePtyOpen(spec: PtySpec): Buffer {
  return Buffer.concat([encodeRecords(spec), tlv(Tag.WINSIZE, encodeWinsize(spec.rows, spec.cols))]);
}

export function encodeClock(ms: number): Buffer {
  const b = Buffer.alloc(12);
  const sec = Math.floor(ms / 1000);
  b.writeBigInt64LE(BigInt(sec), 0);
  b.writeUInt32LE(Math.round((ms - sec * 1000) * 1e6), 8);
  return b;
}
