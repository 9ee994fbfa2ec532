/**
 * envd's `filesystem.Filesystem` service over the guest agent's file
 * operations (spec/envd/filesystem/filesystem.proto; envd's
 * services/filesystem semantics), paths resolved for the call's user.
 */
import path from 'node:path';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { FileEntry, FileType as GuestFileType, WatchOp } from '../../agent/index.js';
import { fsError, userPath } from './context.js';
import { EventType, FileType, Filesystem, type EntryInfoSchema } from './gen/filesystem_pb.js';
import { Feed } from './feed.js';
import { keepaliveMs, stateOf, userOf } from './state.js';

type EntryInit = MessageInitShape<typeof EntryInfoSchema>;

const S_IFMT = 0o170000;
/** Go's os.FileMode type letters, by st_mode type bits. */
const TYPE_LETTER: Record<number, string> = { 0o040000: 'd', 0o120000: 'L', 0o010000: 'p', 0o140000: 'S', 0o060000: 'D', 0o020000: 'Dc' };

/** `mode` as Go's FileMode.String() prints it: -rw-r--r--, drwxr-xr-x, Lrwxrwxrwx, ugtrwx... */
export function goPermissions(mode: number): string {
  let s = TYPE_LETTER[mode & S_IFMT] ?? '';
  if (mode & 0o4000) s += 'u';
  if (mode & 0o2000) s += 'g';
  if (mode & 0o1000) s += 't';
  if (!s) s = '-';
  const rwx = 'rwxrwxrwx';
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? rwx[i] : '-';
  return s;
}

function fileType(t: GuestFileType | undefined): FileType {
  return t === 'file' ? FileType.FILE : t === 'directory' ? FileType.DIRECTORY : FileType.UNSPECIFIED;
}

/** An entry as envd reports it: a symlink has its target's type; mode is the permission bits. */
export function entryInfo(e: FileEntry, p: string): EntryInit {
  return {
    name: path.posix.basename(p),
    path: p,
    type: fileType(e.type === 'symlink' ? e.targetType : e.type),
    size: BigInt(e.size),
    mode: e.mode & 0o777,
    permissions: goPermissions(e.mode),
    owner: e.owner ?? String(e.uid),
    group: e.group ?? String(e.gid),
    modifiedTime: timestampFromMs(Math.trunc(e.mtimeMs)),
    ...(e.symlinkTarget !== undefined && { symlinkTarget: e.symlinkTarget }),
    metadata: e.metadata,
  };
}

const EVENTS: Record<Exclude<WatchOp, 'overflow'>, EventType> = {
  create: EventType.CREATE,
  write: EventType.WRITE,
  remove: EventType.REMOVE,
  rename: EventType.RENAME,
  chmod: EventType.CHMOD,
};

async function target(ctx: HandlerContext, p: string): Promise<{ resolved: string; uid: number; gid: number }> {
  const user = await userOf(ctx);
  return { resolved: userPath(p, user), uid: user.uid, gid: user.gid };
}

export const filesystemService: Partial<ServiceImpl<typeof Filesystem>> = {
  async stat(req, ctx) {
    const { resolved } = await target(ctx, req.path);
    const fs = stateOf(ctx).sandbox.agent.fs;
    const e = await fs.stat(resolved).catch((err: unknown) => Promise.reject(fsError(err, resolved)));
    return { entry: entryInfo(e, resolved) };
  },

  async listDir(req, ctx) {
    const { resolved } = await target(ctx, req.path);
    const fs = stateOf(ctx).sandbox.agent.fs;
    const entries = await fs.list(resolved, { depth: req.depth || 1 }).catch((err: unknown) => Promise.reject(fsError(err, resolved)));
    return { entries: entries.map((e) => entryInfo(e, e.path ?? resolved)) };
  },

  async makeDir(req, ctx) {
    const { resolved, uid, gid } = await target(ctx, req.path);
    const fs = stateOf(ctx).sandbox.agent.fs;
    await fs.mkdir(resolved, { uid, gid }).catch((err: unknown) => {
      const c = fsError(err, resolved);
      throw c.code === Code.AlreadyExists ? new ConnectError(`directory already exists: ${resolved}`, Code.AlreadyExists) : c;
    });
    const e = await fs.stat(resolved).catch((err: unknown) => Promise.reject(fsError(err, resolved)));
    return { entry: entryInfo(e, resolved) };
  },

  async move(req, ctx) {
    const { resolved: from, uid, gid } = await target(ctx, req.source);
    const { resolved: to } = await target(ctx, req.destination);
    const fs = stateOf(ctx).sandbox.agent.fs;
    const e = await fs.rename(from, to, { uid, gid }).catch((err: unknown) => Promise.reject(fsError(err, from)));
    return { entry: entryInfo(e, to) };
  },

  async remove(req, ctx) {
    const { resolved } = await target(ctx, req.path);
    await stateOf(ctx)
      .sandbox.agent.fs.remove(resolved)
      .catch((err: unknown) => Promise.reject(fsError(err, resolved)));
    return {};
  },

  async *watchDir(req, ctx) {
    const { resolved } = await target(ctx, req.path);
    const fs = stateOf(ctx).sandbox.agent.fs;
    const w = await fs.watch(resolved, { recursive: req.recursive }).catch((err: unknown) => Promise.reject(fsError(err, resolved)));
    const feed = new Feed<{ op: WatchOp; name: string }>();
    w.on('event', (ev: { op: WatchOp; name: string }) => feed.push(ev));
    w.once('end', () => feed.end());
    const idle = keepaliveMs(ctx);
    try {
      yield { event: { case: 'start', value: {} } };
      for (;;) {
        const n = await feed.next(ctx.signal, idle);
        if (n.kind === 'idle') yield { event: { case: 'keepalive', value: {} } };
        else if (n.kind === 'end') return;
        else if (n.value.op !== 'overflow') {
          const { op, name } = n.value;
          let entry: EntryInit | undefined;
          if (req.includeEntry && op !== 'remove' && op !== 'rename') {
            const full = path.posix.join(resolved, name);
            entry = await fs.stat(full).then((e) => entryInfo(e, full), () => undefined);
          }
          yield { event: { case: 'filesystem', value: { name, type: EVENTS[op], ...(entry && { entry }) } } };
        }
      }
    } finally {
      await w.close();
    }
  },
};
