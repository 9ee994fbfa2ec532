/**
 * envd's directory watches over the guest's inotify watches (FS_WATCH):
 * WatchDir, a server stream (files.watchDir), and the polling variant the
 * Python sync SDK uses, CreateWatcher / GetWatcherEvents / RemoveWatcher,
 * whose watchers live with the sandbox between calls. Events carry the name
 * relative to the watched directory and, with includeEntry, the entry on
 * create, write and chmod (as envd: a removed or renamed path has none).
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { GuestFiles, WatchEvent, WatchOp } from '../../agent/index.js';
import { fsError } from './context.js';
import { Feed } from './feed.js';
import { entryInfo } from './entry.js';
import { EventType, type FilesystemEventSchema } from './gen/filesystem_pb.js';

type EventInit = MessageInitShape<typeof FilesystemEventSchema>;
type Watcher = Awaited<ReturnType<GuestFiles['watch']>>;
export type Fs = Pick<GuestFiles, 'stat' | 'watch'>;

/** Events a polling watcher keeps between two GetWatcherEvents; beyond, new ones are dropped (as a lagging reader's). */
export const POLL_EVENTS_MAX = 10_000;
/** Polling watchers one sandbox may hold (the guest has 16 watches in all). */
export const POLL_WATCHERS_MAX = 8;

const EVENTS: Record<Exclude<WatchOp, 'overflow'>, EventType> = {
  create: EventType.CREATE,
  write: EventType.WRITE,
  remove: EventType.REMOVE,
  rename: EventType.RENAME,
  chmod: EventType.CHMOD,
};

/** A guest event as envd's FilesystemEvent; undefined for an overflow (envd has no such event). */
async function toEvent(fs: Fs, root: string, ev: WatchEvent, includeEntry: boolean): Promise<EventInit | undefined> {
  if (ev.op === 'overflow') return undefined;
  let entry;
  if (includeEntry && ev.op !== 'remove' && ev.op !== 'rename') {
    const full = path.posix.join(root, ev.name);
    entry = await fs.stat(full).then(
      (e) => entryInfo(e, full),
      () => undefined,
    );
  }
  return { name: ev.name, type: EVENTS[ev.op], ...(entry && { entry }) };
}

/** The guest watch of `root` (resolved for the caller's user). */
function open(fs: Fs, root: string, recursive: boolean): Promise<Watcher> {
  return fs.watch(root, { recursive }).catch((err: unknown) => Promise.reject(fsError(err, root)));
}

/** WatchDir: start{}, then events, keepalives while it is quiet, until the client goes or the directory does. */
export async function* watchDir(fs: Fs, root: string, req: { recursive: boolean; includeEntry: boolean }, signal: AbortSignal, idle: number | undefined) {
  const w = await open(fs, root, req.recursive);
  const feed = new Feed<WatchEvent>();
  w.on('event', (ev: WatchEvent) => feed.push(ev));
  w.once('end', () => feed.end());
  try {
    yield { event: { case: 'start' as const, value: {} } };
    for (;;) {
      const n = await feed.next(signal, idle);
      if (n.kind === 'idle') yield { event: { case: 'keepalive' as const, value: {} } };
      else if (n.kind === 'end') return;
      else {
        const value = await toEvent(fs, root, n.value, req.includeEntry);
        if (value) yield { event: { case: 'filesystem' as const, value } };
      }
    }
  } finally {
    await w.close();
  }
}

interface Polled {
  w: Watcher;
  events: EventInit[];
  /** Events converted in order (an entry's stat is awaited before the next). */
  chain: Promise<void>;
}

/** One sandbox's polling watchers, by id. */
export class PollWatchers {
  private readonly all = new Map<string, Polled>();

  async create(fs: Fs, root: string, req: { recursive: boolean; includeEntry: boolean }): Promise<string> {
    if (this.all.size >= POLL_WATCHERS_MAX)
      throw new ConnectError(`this sandbox already has ${this.all.size} watchers: remove one first`, Code.ResourceExhausted);
    const w = await open(fs, root, req.recursive);
    const id = randomUUID();
    const polled: Polled = { w, events: [], chain: Promise.resolve() };
    w.on('event', (ev: WatchEvent) => {
      polled.chain = polled.chain.then(async () => {
        const e = await toEvent(fs, root, ev, req.includeEntry);
        if (e && polled.events.length < POLL_EVENTS_MAX) polled.events.push(e);
      });
    });
    this.all.set(id, polled);
    return id;
  }

  /** What happened since the last call; a watcher whose directory went answers what was left, then is gone. */
  async take(id: string): Promise<EventInit[]> {
    const polled = this.get(id);
    await polled.chain;
    const events = polled.events.splice(0);
    if (polled.w.closed) this.all.delete(id);
    return events;
  }

  async remove(id: string): Promise<void> {
    const polled = this.get(id);
    this.all.delete(id);
    await polled.w.close();
  }

  /** The sandbox is gone: its watchers with it. */
  clear(): void {
    for (const p of this.all.values()) void p.w.close();
    this.all.clear();
  }

  private get(id: string): Polled {
    const polled = this.all.get(id);
    if (!polled) throw new ConnectError(`watcher ${id} not found`, Code.NotFound);
    return polled;
  }
}
