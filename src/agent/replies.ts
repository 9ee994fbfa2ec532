/**
 * Typed values from what cella-init answers (protocol 3). The guest is
 * untrusted: each decoder checks every size it reads and returns undefined for
 * a body that is not what the protocol says; unknown tags are skipped (a newer
 * guest may add some).
 */
import { decodeRecords, Tag } from './protocol.js';

export type FileType = 'file' | 'directory' | 'symlink' | 'other';

/** A file-system entry as the guest saw it (lstat). */
export interface FileEntry {
  /** Listings only: the path given to list() joined with the entry's relative name. */
  path?: string;
  /** The entry's own type: a symlink is 'symlink' (see targetType). */
  type: FileType;
  /** st_mode: type bits and permission bits. */
  mode: number;
  size: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  /** Names from the guest's /etc/passwd and /etc/group, when they have the ids. */
  owner?: string;
  group?: string;
  /** A symlink's target, fully resolved, when it resolves. */
  symlinkTarget?: string;
  /** What a symlink resolves to, when it does: its type and st_mode. */
  targetType?: FileType;
  targetMode?: number;
  /** The user.e2b.* extended attributes, by the name after that prefix. */
  metadata: Record<string, string>;
}

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /** The user's group first, then every group of /etc/group that names the user. */
  groups: number[];
}

/** A process or terminal as EXEC_LIST reports it. */
export interface GuestProcessInfo {
  id: number;
  pid: number;
  kind: 'exec' | 'pty';
  label?: string;
  /** As it was started; cut short when `truncated`. */
  argv: string[];
  env: Record<string, string>;
  cwd?: string;
  truncated: boolean;
  /** Its wait status once the guest reaped it; it may still be forwarding output. */
  status?: number;
}

export interface GuestStats {
  cpuCount: number;
  /** CPU use since the previous stats() call (since boot for the first), 0..100. */
  cpuUsedPct: number;
  memTotal: number;
  memUsed: number;
  memCache: number;
  diskTotal: number;
  diskUsed: number;
}

export const XATTR_PREFIX = 'user.e2b.';

const S_IFMT = 0o170000;
const TYPES: Record<number, FileType> = { 0o100000: 'file', 0o040000: 'directory', 0o120000: 'symlink' };

export function fileType(mode: number): FileType {
  return TYPES[mode & S_IFMT] ?? 'other';
}

function u32Of(v: Buffer | undefined): number | undefined {
  return v?.length === 4 ? v.readUInt32LE(0) : undefined;
}

function u64Of(v: Buffer | undefined): number | undefined {
  if (v?.length !== 8) return undefined;
  const n = v.readBigUInt64LE(0);
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : undefined;
}

/** The records of a body by tag (the last of a tag wins for get); undefined when the body is not whole records. */
function lastOf(body: Buffer): { get: (tag: number) => Buffer | undefined; all: (tag: number) => Buffer[] } | undefined {
  const records = decodeRecords(body);
  if (!records) return undefined;
  const last = new Map(records);
  return { get: (tag) => last.get(tag), all: (tag) => records.filter(([t]) => t === tag).map(([, v]) => v) };
}

export function decodeEntry(body: Buffer): FileEntry | undefined {
  const r = lastOf(body);
  if (!r) return undefined;
  const mode = u32Of(r.get(Tag.MODE));
  const size = u64Of(r.get(Tag.SIZE));
  const uid = u32Of(r.get(Tag.UID));
  const gid = u32Of(r.get(Tag.GID));
  const mtime = r.get(Tag.MTIME);
  if (mode === undefined || size === undefined || uid === undefined || gid === undefined || mtime?.length !== 12) return undefined;
  const sec = mtime.readBigInt64LE(0);
  const nsec = mtime.readUInt32LE(8);
  if (nsec >= 1e9 || sec > 8_640_000_000_000n || sec < -8_640_000_000_000n) return undefined;
  const entry: FileEntry = { type: fileType(mode), mode, size, mtimeMs: Number(sec) * 1000 + Math.floor(nsec / 1e6), uid, gid, metadata: {} };
  const str = (tag: number): string | undefined => r.get(tag)?.toString('utf8');
  const path = str(Tag.PATH);
  if (path !== undefined) entry.path = path;
  const owner = str(Tag.OWNER);
  if (owner !== undefined) entry.owner = owner;
  const group = str(Tag.GROUP);
  if (group !== undefined) entry.group = group;
  const target = str(Tag.TARGET);
  if (target !== undefined) entry.symlinkTarget = target;
  const targetMode = u32Of(r.get(Tag.TARGET_MODE));
  if (targetMode !== undefined) {
    entry.targetMode = targetMode;
    entry.targetType = fileType(targetMode);
  }
  for (const x of r.all(Tag.XATTR)) {
    const nul = x.indexOf(0);
    const name = nul > 0 ? x.subarray(0, nul).toString('utf8') : '';
    if (name.startsWith(XATTR_PREFIX)) entry.metadata[name.slice(XATTR_PREFIX.length)] = x.subarray(nul + 1).toString('utf8');
  }
  return entry;
}

export function decodeUser(body: Buffer): UserInfo | undefined {
  const r = lastOf(body);
  const name = r?.get(Tag.NAME);
  const uid = u32Of(r?.get(Tag.UID));
  const gid = u32Of(r?.get(Tag.GID));
  const groups = r?.get(Tag.GROUPS);
  if (!r || !name || uid === undefined || gid === undefined || !groups || groups.length % 4) return undefined;
  return {
    name: name.toString('utf8'),
    uid,
    gid,
    home: r.get(Tag.HOME)?.toString('utf8') ?? '',
    shell: r.get(Tag.SHELL)?.toString('utf8') ?? '',
    groups: Array.from({ length: groups.length / 4 }, (_, i) => groups.readUInt32LE(4 * i)),
  };
}

export function decodeProcInfo(body: Buffer): GuestProcessInfo | undefined {
  const records = decodeRecords(body);
  if (!records) return undefined;
  const r = lastOf(body);
  const id = u32Of(r?.get(Tag.ID));
  const pid = u32Of(r?.get(Tag.PID));
  const kind = r?.get(Tag.KIND);
  if (!r || id === undefined || pid === undefined || kind?.length !== 1 || (kind[0] !== 1 && kind[0] !== 2)) return undefined;
  const info: GuestProcessInfo = { id, pid, kind: kind[0] === 1 ? 'exec' : 'pty', argv: [], env: {}, truncated: r.get(Tag.TRUNCATED) !== undefined };
  for (const [tag, v] of records) {
    const s = v.toString('utf8');
    if (tag === Tag.ARG) info.argv.push(s);
    else if (tag === Tag.ENV) {
      const eq = s.indexOf('=');
      if (eq > 0) info.env[s.slice(0, eq)] = s.slice(eq + 1);
    } else if (tag === Tag.CWD) info.cwd = s;
    else if (tag === Tag.LABEL) info.label = s;
  }
  const status = r.get(Tag.STATUS);
  if (status !== undefined) {
    if (status.length !== 4) return undefined;
    info.status = status.readInt32LE(0);
  }
  return info;
}

/** FS_READ's OK: the file's size when opened. */
export function decodeSize(body: Buffer): number | undefined {
  return u64Of(lastOf(body)?.get(Tag.SIZE));
}

export const STATS_LEN = 48;

export function decodeStats(body: Buffer): GuestStats | undefined {
  if (body.length < STATS_LEN) return undefined;
  const u64 = (off: number): number | undefined => u64Of(body.subarray(off, off + 8));
  const [memTotal, memUsed, memCache, diskTotal, diskUsed] = [8, 16, 24, 32, 40].map(u64);
  const use = body.readUInt32LE(4);
  if (memTotal === undefined || memUsed === undefined || memCache === undefined || diskTotal === undefined || diskUsed === undefined || use > 10000)
    return undefined;
  return { cpuCount: body.readUInt32LE(0), cpuUsedPct: use / 100, memTotal, memUsed, memCache, diskTotal, diskUsed };
}

/** EXEC_IN_ACK: stdin bytes the guest is done with, and why when not written (0, EPIPE, ENOBUFS, ESRCH). */
export function decodeInAck(body: Buffer): { bytes: number; errno: number } | undefined {
  return body.length === 8 ? { bytes: body.readUInt32LE(0), errno: body.readUInt32LE(4) } : undefined;
}
