/** What the handler hands each Connect call: its sandbox and that sandbox's process table. */
import { Code, ConnectError, createContextKey, type HandlerContext } from '@connectrpc/connect';
import { basicUser, resolveUser, type Sandbox } from './context.js';
import type { ProcessTable } from './table.js';
import type { PollWatchers } from './watch.js';
import type { UserInfo } from '../../agent/index.js';

export interface RequestState {
  sandbox: Sandbox;
  processes: ProcessTable;
  watchers: PollWatchers;
}

export const REQUEST = createContextKey<RequestState | undefined>(undefined);

export function stateOf(ctx: HandlerContext): RequestState {
  const s = ctx.values.get(REQUEST);
  if (!s) throw new ConnectError('no sandbox for this request', Code.Internal);
  return s;
}

/** The user the call runs as (Basic auth, else the sandbox's default). */
export function userOf(ctx: HandlerContext): Promise<UserInfo> {
  return resolveUser(stateOf(ctx).sandbox, basicUser(ctx.requestHeader.get('authorization')));
}

/** The deadline (Connect-Timeout-Ms) passed, as opposed to the client going away. */
export function deadlinePassed(ctx: HandlerContext): boolean {
  return ctx.signal.aborted && ConnectError.from(ctx.signal.reason).code === Code.DeadlineExceeded;
}

/** Keepalive-Ping-Interval (seconds) as milliseconds, when the client asked for keepalives. */
export function keepaliveMs(ctx: HandlerContext): number | undefined {
  const s = Number(ctx.requestHeader.get('keepalive-ping-interval'));
  return Number.isFinite(s) && s > 0 ? Math.max(1, s) * 1000 : undefined;
}
