/**
 * envd's `process.Process` service: commands and terminals in the guest as
 * the E2B SDK starts, streams, feeds, signals and lists them
 * (spec/envd/process/process.proto; envd's handler/start.go semantics).
 */
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { UserInfo } from '../../agent/index.js';
import { fsError, toConnectError, userPath } from './context.js';
import { Process, Signal, type ProcessEventSchema, type ProcessSelector, type StartRequest } from './gen/process_pb.js';
import { deadlinePassed, keepaliveMs, stateOf, userOf } from './state.js';
import type { Feed } from './feed.js';
import { isPty, type Proc, type ProcConfig, type ProcEvent } from './table.js';

type Event = { event: MessageInitShape<typeof ProcessEventSchema> };

/** envd's PATH (its own environment's, which every process inherits). */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Environment order as in envd: PATH, HOME, USER, LOGNAME, the sandbox's variables, then the request's. */
export function commandEnvironment(
  user: UserInfo,
  sandboxId: string,
  global: Record<string, string> | undefined,
  own: Record<string, string>,
): Record<string, string> {
  return { PATH: DEFAULT_PATH, HOME: user.home, USER: user.name, LOGNAME: user.name, E2B_SANDBOX: 'true', E2B_SANDBOX_ID: sandboxId, ...global, ...own };
}

/**
 * start{pid}, then the process's output and end, keepalives when it is
 * silent; SIGKILL when the deadline passes, nothing when the client goes.
 */
async function* stream({ proc, feed }: Subscribed, ctx: HandlerContext): AsyncGenerator<Event> {
  const idle = keepaliveMs(ctx);
  try {
    yield { event: { event: { case: 'start', value: { pid: proc.pid } } } };
    for (;;) {
      const n = await feed.next(ctx.signal, idle);
      if (n.kind === 'idle') yield { event: { event: { case: 'keepalive', value: {} } } };
      else if (n.kind === 'value') {
        const ev = n.value;
        if (ev.kind === 'end') {
          yield { event: { event: { case: 'end', value: ev.end } } };
          return;
        }
        yield { event: { event: { case: 'data', value: { output: { case: ev.kind, value: ev.data } } } } };
      } else if (n.error) throw n.error;
      else {
        if (deadlinePassed(ctx)) {
          await proc.handle?.signal(9).catch(() => {});
          throw new ConnectError('the process ran past its timeout and was killed', Code.DeadlineExceeded);
        }
        return;
      }
    }
  } finally {
    proc.unsubscribe(feed);
  }
}

/** A process and a subscription to its output, taken as soon as the process is known so nothing is missed. */
interface Subscribed {
  proc: Proc;
  feed: Feed<ProcEvent>;
}

function subscribed(proc: Proc): Subscribed {
  return { proc, feed: proc.subscribe() };
}

async function start(req: StartRequest, ctx: HandlerContext): Promise<Subscribed> {
  const { sandbox, processes } = stateOf(ctx);
  const cfg = req.process;
  if (!cfg?.cmd) throw new ConnectError('process.cmd is required', Code.InvalidArgument);
  const user = await userOf(ctx);
  const cwd = userPath(cfg.cwd, user);
  if (cfg.cwd) {
    const e = await sandbox.agent.fs.stat(cwd).catch((err: unknown) => {
      const c = fsError(err, cwd);
      throw c.code === Code.NotFound ? new ConnectError(`cwd '${cwd}' does not exist`, Code.InvalidArgument) : c;
    });
    if ((e.targetType ?? e.type) !== 'directory') throw new ConnectError(`cwd '${cwd}' is not a directory`, Code.InvalidArgument);
  }
  const env = commandEnvironment(user, sandbox.id, sandbox.defaults?.envVars, cfg.envs);
  const base = { env, cwd, uid: user.uid, gid: user.gid };
  const config: ProcConfig = { cmd: cfg.cmd, args: cfg.args, envs: cfg.envs, ...(cfg.cwd !== undefined && { cwd: cfg.cwd }) };
  try {
    if (req.pty) {
      const size = req.pty.size;
      const pty = await sandbox.agent.openPty({ ...base, argv: [cfg.cmd, ...cfg.args], rows: size?.rows || 24, cols: size?.cols || 80 });
      return subscribed(processes.add(pty, 'pty', config, req.tag));
    }
    // An SDK before envd 0.3.0 sends no stdin flag: its processes always had a stdin.
    const pipe = req.stdin ?? true;
    const p = await sandbox.agent.spawn(
      { ...base, argv: [cfg.cmd, ...cfg.args], ...(req.tag !== undefined && { label: req.tag }) },
      { stdin: pipe ? 'pipe' : 'none' },
    );
    return subscribed(processes.add(p, 'exec', config, req.tag));
  } catch (err) {
    throw toConnectError(err);
  }
}

async function find(ctx: HandlerContext, sel: ProcessSelector | undefined): Promise<Proc> {
  const { sandbox, processes } = stateOf(ctx);
  return processes.find(sandbox.agent, sel?.selector);
}

/** The live handle of `proc`: FailedPrecondition once it ended. */
function live(proc: Proc): NonNullable<Proc['handle']> {
  if (!proc.handle || proc.end) throw new ConnectError(`process ${proc.pid} has ended`, Code.NotFound);
  return proc.handle;
}

async function sendInput(proc: Proc, input: { case: 'stdin' | 'pty'; value: Uint8Array } | { case: undefined }): Promise<void> {
  if (!input.case) return;
  const h = live(proc);
  const data = Buffer.from(input.value);
  try {
    if (isPty(proc, h)) h.write(data);
    else await h.write(data);
  } catch (err) {
    throw toConnectError(err);
  }
}

export const processService: Partial<ServiceImpl<typeof Process>> = {
  async *start(req, ctx) {
    yield* stream(await start(req, ctx), ctx);
  },

  async *connect(req, ctx) {
    yield* stream(subscribed(await find(ctx, req.process)), ctx);
  },

  async list(_req, ctx) {
    const { sandbox, processes } = stateOf(ctx);
    return { processes: await processes.list(sandbox.agent) };
  },

  async sendInput(req, ctx) {
    await sendInput(await find(ctx, req.process), req.input?.input ?? { case: undefined });
    return {};
  },

  async streamInput(reqs, ctx) {
    let proc: Proc | undefined;
    for await (const r of reqs) {
      if (r.event.case === 'start') proc = await find(ctx, r.event.value.process);
      else if (r.event.case === 'data') {
        if (!proc) throw new ConnectError('the first message must be start', Code.InvalidArgument);
        await sendInput(proc, r.event.value.input?.input ?? { case: undefined });
      }
    }
    return {};
  },

  async sendSignal(req, ctx) {
    const proc = await find(ctx, req.process);
    const sig = req.signal === Signal.SIGKILL ? 9 : req.signal === Signal.SIGTERM ? 15 : 0;
    if (!sig) throw new ConnectError(`unsupported signal ${req.signal}`, Code.InvalidArgument);
    await live(proc)
      .signal(sig)
      .catch((err: unknown) => {
        throw toConnectError(err);
      });
    return {};
  },

  async closeStdin(req, ctx) {
    const proc = await find(ctx, req.process);
    const h = live(proc);
    if (isPty(proc, h)) throw new ConnectError('a terminal has no stdin to close', Code.FailedPrecondition);
    await h.closeStdin().catch((err: unknown) => {
      throw toConnectError(err);
    });
    return {};
  },

  async update(req, ctx) {
    const proc = await find(ctx, req.process);
    const h = live(proc);
    const size = req.pty?.size;
    if (size) {
      if (!isPty(proc, h)) throw new ConnectError(`process ${proc.pid} is not a terminal`, Code.FailedPrecondition);
      try {
        h.resize(size.cols, size.rows);
      } catch (err) {
        throw new ConnectError((err as Error).message, Code.InvalidArgument);
      }
    }
    return {};
  },
};
