/**
 * Framing of the cella-init protocol (mirror of guest/init/protocol.h) and the
 * encoders of what the host sends. Frame: u32 body length, u8 type, u8 stream,
 * u16 reserved, u32 id (all LE), body. Structured bodies are TLV records:
 * u8 tag, u32 length (LE), bytes.
 */

export const PROTOCOL_VERSION = 3;
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
  SESSION: 13,
  EXEC_IN: 14,
  EXEC_CLOSE_IN: 15,
  EXEC_LIST: 16,
  ATTACH: 17,
  USER_LOOKUP: 18,
  FS_STAT: 19,
  FS_LIST: 20,
  FS_MKDIR: 21,
  FS_RENAME: 22,
  FS_REMOVE: 23,
  FS_READ: 24,
  FS_CREDIT: 25,
  FS_WRITE_OPEN: 26,
  FS_WRITE_DATA: 27,
  FS_WRITE_CLOSE: 28,
  FS_CLOSE: 29,
  FS_WATCH: 30,
  FS_UNWATCH: 31,
  STATS: 32,
  SET_ENV: 33,
  ENVD_LISTEN: 34,
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
  EXEC_IN_ACK: 76,
  PROC_INFO: 77,
  FS_ENTRY: 78,
  FS_DATA: 79,
  FS_END: 80,
  FS_EVENT: 81,
} as const;
export type MsgType = (typeof Msg)[keyof typeof Msg];

export const Tag = {
  ARG: 1,
  ENV: 2,
  CWD: 3,
  UID: 4,
  GID: 5,
  STDIN: 6,
  WINSIZE: 7,
  STDIN_PIPE: 8,
  GROUPS: 9,
  LABEL: 10,
  ID: 11,
  PID: 12,
  KIND: 13,
  STATUS: 14,
  PATH: 15,
  DEPTH: 16,
  MODE: 17,
  NAME: 18,
  HOME: 19,
  SHELL: 20,
  SIZE: 21,
  MTIME: 22,
  OWNER: 23,
  GROUP: 24,
  TARGET: 25,
  TARGET_MODE: 26,
  XATTR: 27,
  RECURSIVE: 28,
  CREDIT: 29,
  DEST: 30,
  TRUNCATED: 31,
} as const;

/** What an FS_EVENT reports (its stream byte): fsnotify's operations, plus lost events. */
export const FsOp = { CREATE: 1, WRITE: 2, REMOVE: 3, RENAME: 4, CHMOD: 5, OVERFLOW: 6 } as const;

/** Guest-side limits the host relies on (guest/init/proc.c, fs.h). */
export const STDIN_WINDOW = 256 * 1024;
export const ENVD_PORT = 49983;

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
  /** Supplementary groups. Default with a uid: the user's, from the guest's /etc/group (protocol 3). */
  groups?: number[];
  /** The host's name for the process (E2B's tag), listed by EXEC_LIST (protocol 3). */
  label?: string;
  stdin?: Buffer;
  /** Keep stdin open for EXEC_IN until EXEC_CLOSE_IN (protocol 3). */
  stdinPipe?: boolean;
}

/** What to run on a terminal (PTY_OPEN): argv may be empty or absent for /bin/sh; rows and cols are its size. */
export interface PtySpec extends Omit<ProcessSpec, 'argv' | 'stdinPipe'> {
  argv?: string[];
  rows: number;
  cols: number;
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

/** One TLV record. */
export function tlv(tag: number, value: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(tag, 0);
  head.writeUInt32LE(value.length, 1);
  return Buffer.concat([head, value]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

function checkU32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be an integer in 0..4294967295, got ${v}`);
  return v;
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
  if (spec.uid !== undefined) parts.push(tlv(Tag.UID, u32(checkU32('uid', spec.uid))));
  if (spec.gid !== undefined) parts.push(tlv(Tag.GID, u32(checkU32('gid', spec.gid))));
  if (spec.groups !== undefined) parts.push(tlv(Tag.GROUPS, Buffer.concat(spec.groups.map((g) => u32(checkU32('group', g))))));
  if (spec.label !== undefined) parts.push(tlv(Tag.LABEL, Buffer.from(spec.label)));
  if (spec.stdin !== undefined) parts.push(tlv(Tag.STDIN, spec.stdin));
  if (spec.stdinPipe) parts.push(tlv(Tag.STDIN_PIPE));
  return Buffer.concat(parts);
}

/** Terminal size as cella-init reads it (TAG_WINSIZE, PTY_RESIZE): u16 rows, u16 cols. */
export function encodeWinsize(rows: number, cols: number): Buffer {
  for (const [name, v] of [
    ['rows', rows],
    ['cols', cols],
  ] as const) {
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

/** A path as cella-init takes it: bytes, no NUL (the guest refuses one; this says so first). */
function pathValue(name: string, p: string): Buffer {
  if (p.length === 0 || p.includes('\0')) throw new RangeError(`${name} must be a non-empty string without NUL`);
  return Buffer.from(p);
}

/** The fields of a file, user or watch request (FS_*, USER_LOOKUP). */
export interface GuestRequest {
  path?: string;
  dest?: string;
  name?: string;
  uid?: number;
  gid?: number;
  mode?: number;
  depth?: number;
  credit?: number;
  recursive?: boolean;
  /** Extended attributes to set, by their full name (user.e2b.*). */
  xattrs?: Record<string, string | Buffer>;
}

export function encodeRequest(r: GuestRequest): Buffer {
  const parts: Buffer[] = [];
  if (r.path !== undefined) parts.push(tlv(Tag.PATH, pathValue('path', r.path)));
  if (r.dest !== undefined) parts.push(tlv(Tag.DEST, pathValue('destination', r.dest)));
  if (r.name !== undefined) parts.push(tlv(Tag.NAME, pathValue('name', r.name)));
  for (const [tag, name, v] of [
    [Tag.UID, 'uid', r.uid],
    [Tag.GID, 'gid', r.gid],
    [Tag.MODE, 'mode', r.mode],
    [Tag.DEPTH, 'depth', r.depth],
    [Tag.CREDIT, 'credit', r.credit],
  ] as const) {
    if (v !== undefined) parts.push(tlv(tag, u32(checkU32(name, v))));
  }
  if (r.recursive) parts.push(tlv(Tag.RECURSIVE));
  const xattrs = Object.entries(r.xattrs ?? {});
  if (xattrs.length > 32) throw new RangeError('at most 32 extended attributes');
  for (const [k, v] of xattrs) parts.push(tlv(Tag.XATTR, Buffer.concat([pathValue('attribute name', k), Buffer.alloc(1), Buffer.from(v)])));
  return Buffer.concat(parts);
}

/** SET_ENV body: KEY=VALUE records. Keys must be non-empty without '=' or NUL; values without NUL. */
export function encodeEnv(env: Record<string, string>): Buffer {
  const entries = Object.entries(env);
  if (entries.length > 256) throw new RangeError('at most 256 environment variables');
  return Buffer.concat(
    entries.map(([k, v]) => {
      if (k.length === 0 || k.includes('=') || k.includes('\0') || v.includes('\0')) throw new RangeError(`bad environment variable ${JSON.stringify(k)}`);
      return tlv(Tag.ENV, Buffer.from(`${k}=${v}`));
    }),
  );
}

/**
 * The TLV records of a guest's body, or undefined when it is not a sequence of
 * whole records. Values are views into the body.
 */
export function decodeRecords(body: Buffer): [number, Buffer][] | undefined {
  const out: [number, Buffer][] = [];
  for (let off = 0; off < body.length;) {
    if (body.length - off < 5) return undefined;
    const len = body.readUInt32LE(off + 1);
    if (len > body.length - off - 5) return undefined;
    out.push([body.readUInt8(off), body.subarray(off + 5, off + 5 + len)]);
    off += 5 + len;
  }
  return out;
}
