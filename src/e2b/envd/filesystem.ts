/**
 * envd's `filesystem.Filesystem` service over the guest agent's file
 * operations (spec/envd/filesystem/filesystem.proto; envd's
 * services/filesystem semantics), paths resolved for the call's user;
 * the watches are in watch.ts.
 */
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import { fsError, userPath } from './context.js';
import { entryInfo } from './entry.js';
import { Filesystem } from './gen/filesystem_pb.js';
import { keepaliveMs, stateOf, userOf } from './state.js';
import { watchDir } from './watch.js';

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
    yield* watchDir(stateOf(ctx).sandbox.agent.fs, resolved, req, ctx.signal, keepaliveMs(ctx));
  },

  async createWatcher(req, ctx) {
    const { resolved } = await target(ctx, req.path);
    const s = stateOf(ctx);
    return { watcherId: await s.watchers.create(s.sandbox.agent.fs, resolved, req) };
  },

  async getWatcherEvents(req, ctx) {
    return { events: await stateOf(ctx).watchers.take(req.watcherId) };
  },

  async removeWatcher(req, ctx) {
    await stateOf(ctx).watchers.remove(req.watcherId);
    return {};
  },
};
