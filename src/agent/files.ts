/**
 * Files in the guest (protocol 3), as AgentClient.fs: entries, listings,
 * directories, renames, removals, reads and writes as streams, and watches.
 * Paths are used as given: the caller resolves ~ and relative paths (see
 * resolveGuestPath). Errors are CellaErrors with the guest's errno in
 * details.errno: ENOENT is NOT_FOUND, EEXIST ALREADY_EXISTS, EACCES
 * ACCESS_DENIED, ENOSPC GUEST_DISK_FULL, ENOTDIR/EISDIR INVALID_ARGUMENT.
 */
import { EventEmitter } from 'node:events';
import { constants } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { CellaError } from '../contract/index.js';
import type { Channel, RequestOptions } from './channel.js';
import { errnoError } from './errors.js';
import { FsOp, Msg, encodeRequest, type Frame, u32 } from './protocol.js';
import { decodeEntry, decodeSize, type FileEntry } from './replies.js';

/** Bytes a read lets the guest send ahead of its consumer. */
export const READ_WINDOW = 256 * 1024;
/** File data per frame of a write. */
const WRITE_CHUNK = 256 * 1024;
/** A listing longer than this is abandoned (the guest is asked to stop) with PAYLOAD_TOO_LARGE. */
export const LIST_MAX_ENTRIES = 200_000;
/** Watch events an async iterator holds for a consumer that lags; beyond, one 'overflow' event stands for what was dropped. */
export const WATCH_QUEUE_MAX = 10_000;

export interface Owner {
  uid?: number;
  gid?: number;
}

export type WatchOp = 'create' | 'write' | 'remove' | 'rename' | 'chmod' | 'overflow';
export interface WatchEvent {
  op: WatchOp;
  /** Relative to the watched directory ('' for the directory itself; '' with 'overflow'). */
  name: string;
}

const OPS: Record<number, WatchOp> = {
  [FsOp.CREATE]: 'create',
  [FsOp.WRITE]: 'write',
  [FsOp.REMOVE]: 'remove',
  [FsOp.RENAME]: 'rename',
  [FsOp.CHMOD]: 'chmod',
  [FsOp.OVERFLOW]: 'overflow',
};

/**
 * `p` as envd resolves it for a user: a leading ~ is their home, a relative
 * path is under `workdir` (else home); the result is normalized.
 */
export function resolveGuestPath(p: string, home: string, workdir?: string): string {
  if (p === '~' || p.startsWith('~/')) return path.posix.join(home, p.slice(1));
  return path.posix.resolve(workdir ?? home, p);
}

function malformed(what: string): CellaError {
  return new CellaError('AGENT_ERROR', `guest agent: malformed answer to ${what}`);
}

function entryOf(f: Frame, what: string): FileEntry {
  const e = decodeEntry(f.body);
  if (!e) throw malformed(what);
  return e;
}

/**
 * A directory being watched: 'event' (WatchEvent) until 'end' (the directory
 * went, or the connection), or iterate it with for await. close() stops it.
 */
export class Watcher extends EventEmitter implements AsyncIterable<WatchEvent> {
  private done = false;
  private readonly queue: WatchEvent[] = [];
  private wake: (() => void) | undefined;

  /** @internal Made by GuestFiles.watch(). */
  constructor(
    readonly id: number,
    private readonly ch: Channel,
  ) {
    super();
    ch.register(id, { frame: (f) => this.onFrame(f), end: () => this.finish() });
  }

  private onFrame(f: Frame): void {
    if (f.type === Msg.FS_END) {
      this.ch.unregister(this.id);
      return;
    }
    const op = OPS[f.stream];
    if (f.type !== Msg.FS_EVENT || !op) return;
    const ev: WatchEvent = { op, name: op === 'overflow' ? '' : f.body.toString('utf8') };
    this.emit('event', ev);
    if (this.queue.length < WATCH_QUEUE_MAX) this.queue.push(ev);
    else if (this.queue[this.queue.length - 1]?.op !== 'overflow') this.queue[this.queue.length - 1] = { op: 'overflow', name: '' };
    this.wake?.();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.emit('end');
    this.wake?.();
  }

  get closed(): boolean {
    return this.done;
  }

  /** Stops watching. */
  async close(): Promise<void> {
    if (this.done) return;
    this.ch.unregister(this.id);
    await this.ch.request(Msg.FS_UNWATCH, undefined, { id: this.id, what: 'unwatch' }).catch(() => {});
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    for (;;) {
      const ev = this.queue.shift();
      if (ev) yield ev;
      else if (this.done) return;
      else await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

/** Listings the guest walks at once (MAX_WALKS in guest/init/fs.h): more wait here for a turn. */
const GUEST_WALKS = 4;

export class GuestFiles {
  private walking = 0;
  private readonly waiting: (() => void)[] = [];

  /** @internal Made by AgentClient. */
  constructor(private readonly ch: Channel) {}

  private async walkTurn<T>(fn: () => Promise<T>): Promise<T> {
    if (this.walking >= GUEST_WALKS) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.walking++;
    try {
      return await fn();
    } finally {
      this.walking--;
      this.waiting.shift()?.();
    }
  }

  private async ask(type: number, what: string, body: Buffer, opts: Omit<RequestOptions, 'what'> = {}): Promise<Frame> {
    await this.ch.requireV3(what);
    return this.ch.request(type, body, { what, ...opts });
  }

  /** The entry at `p` (lstat: a symlink is itself, with its target resolved). NOT_FOUND when missing. */
  async stat(p: string): Promise<FileEntry> {
    return entryOf(await this.ask(Msg.FS_STAT, `stat ${p}`, encodeRequest({ path: p })), `stat ${p}`);
  }

  /** Whether something is at `p`. */
  async exists(p: string): Promise<boolean> {
    return this.stat(p).then(
      () => true,
      (e: unknown) => {
        if (e instanceof CellaError && e.code === 'NOT_FOUND') return false;
        throw e;
      },
    );
  }

  /**
   * The entries under the directory `p`, `depth` levels deep (default 1), in
   * the order the walk met them (pre-order, not sorted); each entry's path is
   * `p` joined with its relative name. The directory's own symlink is
   * followed, none below it. NOT_FOUND when missing, INVALID_ARGUMENT (ENOTDIR)
   * for a file.
   */
  async list(p: string, opts: { depth?: number; maxEntries?: number; timeoutMs?: number } = {}): Promise<FileEntry[]> {
    const what = `list ${p}`;
    const max = opts.maxEntries ?? LIST_MAX_ENTRIES;
    const entries: FileEntry[] = [];
    const id = this.ch.allocId();
    await this.walkTurn(() =>
      this.ask(Msg.FS_LIST, what, encodeRequest({ path: p, depth: opts.depth ?? 1 }), {
        id,
        timeoutMs: opts.timeoutMs ?? 120_000,
        collect: (f) => {
          if (f.type !== Msg.FS_ENTRY) return undefined;
          const e = decodeEntry(f.body);
          if (e?.path !== undefined && entries.length < max) {
            entries.push(e);
            return undefined;
          }
          this.ch.send(Msg.FS_CLOSE, id); // the guest stops the walk; its OK never comes
          return e ? new CellaError('PAYLOAD_TOO_LARGE', `${p} holds more than ${max} entries`) : malformed(what);
        },
      }),
    );
    return entries;
  }

  /**
   * Makes the directory `p` and the missing ones above it, owned by `owner`
   * (mode 0755 unless `mode`). ALREADY_EXISTS when a directory is there,
   * INVALID_ARGUMENT (ENOTDIR) when something else is.
   */
  async mkdir(p: string, opts: Owner & { mode?: number } = {}): Promise<void> {
    await this.ask(Msg.FS_MKDIR, `mkdir ${p}`, encodeRequest({ path: p, ...opts }));
  }

  /** Renames `from` to `to`, making `to`'s missing parents (owned by `owner`); the destination's entry. */
  async rename(from: string, to: string, owner: Owner = {}): Promise<FileEntry> {
    const what = `rename ${from}`;
    return entryOf(await this.ask(Msg.FS_RENAME, what, encodeRequest({ path: from, dest: to, ...owner }), { timeoutMs: 60_000 }), what);
  }

  /** Removes `p` and everything under it; nothing happens when it is missing. */
  async remove(p: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.ask(Msg.FS_REMOVE, `remove ${p}`, encodeRequest({ path: p }), { timeoutMs: opts.timeoutMs ?? 300_000 });
  }

  /**
   * Reads the regular file `p` as a stream, the guest sending no more than
   * READ_WINDOW bytes ahead of the consumer. NOT_FOUND when missing,
   * INVALID_ARGUMENT (EISDIR) for a directory. Destroying the stream stops
   * the guest.
   */
  async read(p: string): Promise<{ size: number; stream: Readable }> {
    const what = `read ${p}`;
    await this.ch.requireV3(what);
    const id = this.ch.allocId();
    let granted = READ_WINDOW;
    let received = 0;
    let finished = false;
    let opened = false;
    let early: Error | undefined;
    const stream = new Readable({
      highWaterMark: READ_WINDOW,
      read: () => {
        // The consumer wants more: let the guest send up to a window ahead of what it has taken.
        const ahead = granted - received;
        if (!finished && ahead < READ_WINDOW / 2) {
          this.ch.send(Msg.FS_CREDIT, id, u32(READ_WINDOW - ahead));
          granted += READ_WINDOW - ahead;
        }
      },
      destroy: (err, cb) => {
        if (!finished) {
          finished = true;
          this.ch.unregister(id);
          this.ch.send(Msg.FS_CLOSE, id);
        }
        cb(err);
      },
    });
    this.ch.register(id, {
      frame: (f) => {
        if (finished) return;
        if (f.type === Msg.FS_DATA) {
          received += f.body.length;
          if (received > granted) stream.destroy(new CellaError('AGENT_ERROR', `guest agent: ${what}: more data than the host asked for`));
          else stream.push(Buffer.from(f.body));
        } else if (f.type === Msg.FS_END && f.body.length === 4) {
          finished = true;
          this.ch.unregister(id);
          const errno = f.body.readUInt32LE(0);
          if (!errno) stream.push(null);
          else if (opened) stream.destroy(errnoError(errno, what));
          else early = errnoError(errno, what); // before the caller has the stream: read() rejects with it
        }
      },
      end: () => {
        if (!finished) stream.destroy(new CellaError('AGENT_ERROR', `guest agent: ${what}: the connection to the guest closed`));
      },
    });
    try {
      const f = await this.ch.request(Msg.FS_READ, encodeRequest({ path: p, credit: READ_WINDOW }), { id, what });
      const size = decodeSize(f.body);
      if (size === undefined) throw malformed(what);
      if (early) throw early;
      opened = true;
      return { size, stream };
    } catch (err) {
      finished = true;
      this.ch.unregister(id);
      stream.destroy();
      throw err;
    }
  }

  /** The whole file `p`, at most `maxBytes` (default 64 MiB; PAYLOAD_TOO_LARGE beyond). */
  async readFile(p: string, maxBytes = 64 << 20): Promise<Buffer> {
    const { size, stream } = await this.read(p);
    if (size > maxBytes) {
      stream.destroy();
      throw new CellaError('PAYLOAD_TOO_LARGE', `${p} is ${size} bytes, over ${maxBytes}`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of stream as AsyncIterable<Buffer>) {
      total += c.length;
      if (total > maxBytes) {
        stream.destroy();
        throw new CellaError('PAYLOAD_TOO_LARGE', `${p} grew over ${maxBytes} bytes while read`);
      }
      chunks.push(c);
    }
    return Buffer.concat(chunks);
  }

  /**
   * Writes `data` to `p` (made with its missing parents, truncated), owned by
   * `owner`, with `mode` and `metadata` (user.e2b.<key> attributes); the
   * file's entry. Data goes at the pace the guest takes it. A full disk in the
   * guest is GUEST_DISK_FULL (errno ENOSPC), as soon as it happens.
   */
  async write(
    p: string,
    data: Buffer | string | AsyncIterable<Uint8Array | string>,
    opts: Owner & { mode?: number; metadata?: Record<string, string> } = {},
  ): Promise<FileEntry> {
    const what = `write ${p}`;
    await this.ch.requireV3(what);
    const xattrs = Object.fromEntries(Object.entries(opts.metadata ?? {}).map(([k, v]) => [`user.e2b.${k}`, v]));
    const id = this.ch.allocId();
    let failed: Error | undefined;
    // Set by the guest's FS_END while the data is on its way: read through a function, not a loop condition.
    const refused = (): boolean => failed !== undefined;
    this.ch.register(id, {
      frame: (f) => {
        if (f.type === Msg.FS_END && f.body.length === 4) failed ??= errnoError(f.body.readUInt32LE(0) || constants.errno.EIO, what);
      },
      end: () => {},
    });
    try {
      await this.ch.request(Msg.FS_WRITE_OPEN, encodeRequest({ path: p, uid: opts.uid, gid: opts.gid, mode: opts.mode, xattrs }), { id, what });
      const source = typeof data === 'string' || Buffer.isBuffer(data) ? [data] : data;
      try {
        for await (const piece of source) {
          const buf = typeof piece === 'string' ? Buffer.from(piece) : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
          for (let off = 0; off < buf.length && !refused(); off += WRITE_CHUNK)
            await this.ch.sendDrained(Msg.FS_WRITE_DATA, id, buf.subarray(off, off + WRITE_CHUNK));
          if (refused()) break;
        }
      } catch (err) {
        this.ch.send(Msg.FS_CLOSE, id); // the source failed: the file is left as far as it got
        throw err;
      }
      if (failed) {
        this.ch.send(Msg.FS_CLOSE, id);
        throw failed;
      }
      return entryOf(await this.ch.request(Msg.FS_WRITE_CLOSE, undefined, { id, what, timeoutMs: 60_000 }), what);
    } finally {
      this.ch.unregister(id);
    }
  }

  /**
   * Watches the directory `p` (and, `recursive`, every directory under it,
   * made later ones included). NOT_FOUND when missing, INVALID_ARGUMENT
   * (ENOTDIR) for a file. Watches end with the connection.
   */
  async watch(p: string, opts: { recursive?: boolean } = {}): Promise<Watcher> {
    const what = `watch ${p}`;
    await this.ch.requireV3(what);
    const id = this.ch.allocId();
    const w = new Watcher(id, this.ch);
    try {
      await this.ch.request(Msg.FS_WATCH, encodeRequest({ path: p, recursive: opts.recursive ?? false }), { id, what, timeoutMs: 60_000 });
    } catch (err) {
      this.ch.unregister(id);
      throw err;
    }
    return w;
  }
}
