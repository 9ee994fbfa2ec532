/**
 * What envd needs of a sandbox and of the request it serves: the guest's
 * agent (narrowed to the calls envd makes, so tests can fake it), the
 * sandbox's defaults, the user a request runs as, paths as envd resolves
 * them, and Cella errors as Connect codes.
 */
import type { EventEmitter } from 'node:events';
import { Code, ConnectError } from '@connectrpc/connect';
import type { connectNodeAdapter } from '@connectrpc/connect-node';
import type { ExitStatus, GuestFiles, GuestProcessInfo, ProcessSpec, PtySpec, SpawnOptions, UserInfo } from '../../agent/index.js';
import { resolveGuestPath } from '../../agent/index.js';
import { isCellaError, type ErrorCode } from '../../contract/index.js';

/** An HTTP/1.1 or HTTP/2 request and response, as connect-node takes them. */
export type EnvdRequest = Parameters<ReturnType<typeof connectNodeAdapter>>[0];
export type EnvdResponse = Parameters<ReturnType<typeof connectNodeAdapter>>[1];

/** A process or terminal in the guest (ExecProcess, PtySession): events 'exit' (ExitStatus) then 'close'. */
export interface GuestHandle extends EventEmitter {
  readonly pid: number | undefined;
  readonly closed: boolean;
  exitStatus: ExitStatus | undefined;
  signal(signal: number): Promise<void>;
  detach(): void;
}
/** A command: events 'stdout', 'stderr'. */
export interface GuestExec extends GuestHandle {
  write(data: Buffer): Promise<void>;
  closeStdin(): Promise<void>;
}
/** A terminal: events 'data'. */
export interface GuestPty extends GuestHandle {
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
}

/** The agent calls envd makes (AgentClient has them all). */
export interface EnvdAgent {
  spawn(spec: ProcessSpec, opts?: SpawnOptions): Promise<GuestExec>;
  openPty(spec: PtySpec): Promise<GuestPty>;
  listProcesses(): Promise<GuestProcessInfo[]>;
  attach(info: Pick<GuestProcessInfo, 'id' | 'pid' | 'kind'>): Promise<GuestExec | GuestPty>;
  lookupUser(user: string | number): Promise<UserInfo>;
  readonly fs: Pick<GuestFiles, 'stat' | 'list' | 'mkdir' | 'rename' | 'remove' | 'read' | 'write' | 'watch'>;
}

/** Defaults a sandbox was created with (SandboxAccess.defaults of src/e2b/sandboxes.ts). */
export interface SandboxDefaults {
  user: string;
  envVars: Record<string, string>;
}

/** The sandboxes envd serves. */
export interface EnvdSandboxes {
  /** The agent of sandbox `id` while it runs; undefined otherwise. */
  agent(id: string): EnvdAgent | undefined;
  defaults(id: string): Promise<SandboxDefaults | undefined>;
}

/** E2B templates run commands as `user`; an image without one runs them as root. */
export const DEFAULT_USER = 'user';

/** The request's sandbox: its id, agent and defaults. */
export interface Sandbox {
  id: string;
  agent: EnvdAgent;
  defaults: SandboxDefaults | undefined;
}

/** The user named by `Authorization: Basic base64("<user>:")`, if any. */
export function basicUser(authorization: string | null | undefined): string | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(authorization ?? '');
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const user = decoded.slice(0, decoded.includes(':') ? decoded.indexOf(':') : undefined);
  return user || undefined;
}

/**
 * The user a request runs as: the one it names, else the sandbox's default,
 * else `user`, else root when the image has no `user` (a plain image, not an
 * E2B template). A named user the guest does not have is Unauthenticated, as in envd.
 */
export async function resolveUser(sb: Sandbox, named: string | undefined): Promise<UserInfo> {
  const wanted = named ?? sb.defaults?.user ?? DEFAULT_USER;
  try {
    return await sb.agent.lookupUser(wanted);
  } catch (err) {
    if (!isCellaError(err, 'NOT_FOUND')) throw toConnectError(err);
    if (named !== undefined || sb.defaults?.user !== undefined) throw new ConnectError(`invalid username: '${wanted}'`, Code.Unauthenticated);
    return sb.agent.lookupUser(0).catch((e: unknown) => {
      throw toConnectError(e);
    });
  }
}

/** `p` for `user` as envd resolves it: ~ is home, relative is under home; empty is home. */
export function userPath(p: string | undefined, user: UserInfo): string {
  return resolveGuestPath(p || '~', user.home);
}

const CODES: Partial<Record<ErrorCode, Code>> = {
  NOT_FOUND: Code.NotFound,
  INVALID_ARGUMENT: Code.InvalidArgument,
  ALREADY_EXISTS: Code.AlreadyExists,
  ACCESS_DENIED: Code.PermissionDenied,
  UNAUTHENTICATED: Code.Unauthenticated,
  GUEST_DISK_FULL: Code.ResourceExhausted,
  QUOTA_EXCEEDED: Code.ResourceExhausted,
  PAYLOAD_TOO_LARGE: Code.ResourceExhausted,
  INVALID_STATE: Code.FailedPrecondition,
  AGENT_UNSUPPORTED: Code.Unimplemented,
  AGENT_TIMEOUT: Code.DeadlineExceeded,
};

/** A Cella error as the Connect error the SDK maps (NotFound → NotFoundError, ...). */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  for (const [code, connect] of Object.entries(CODES)) if (isCellaError(err, code as ErrorCode)) return new ConnectError((err as Error).message, connect);
  return new ConnectError(err instanceof Error ? err.message : String(err), Code.Internal);
}

/** The Connect error of a file-system call on `path` (a missing path says so in envd's words). */
export function fsError(err: unknown, path: string): ConnectError {
  const e = toConnectError(err);
  if (e.code === Code.NotFound) return new ConnectError(`path not found: ${path}`, Code.NotFound);
  return e;
}
