/**
 * The processes envd knows in one sandbox, by guest pid: the handle on each
 * (a command or a terminal), its config and tag as started, the streams
 * subscribed to its output (output nobody is subscribed to is dropped, as in
 * envd), and its end, kept a while for Connect. The guest is the source of
 * truth: a process this table does not hold (cellad restarted) or whose
 * handle went with the connection (a suspend) is found by listing the
 * guest's processes and attached again.
 */
import { Code, ConnectError } from '@connectrpc/connect';
import type { ExitStatus, GuestProcessInfo } from '../../agent/index.js';
import { toConnectError, type EnvdAgent, type GuestExec, type GuestPty } from './context.js';
import { Feed } from './feed.js';

export interface ProcConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

export interface EndInfo {
  exitCode: number;
  exited: boolean;
  status: string;
  error?: string;
}

export type ProcEvent = { kind: 'stdout' | 'stderr' | 'pty'; data: Uint8Array } | { kind: 'end'; end: EndInfo };

export type Selector = { case: 'pid'; value: number } | { case: 'tag'; value: string } | { case: undefined; value?: undefined };

/** How long an ended process's exit stays known (the guest keeps it 5 minutes too). */
const KEEP_ENDED_MS = 60_000;

/** Go's names (os.ProcessState.String()) for the signals a process is usually ended by. */
const SIGNALS: Record<number, string> = {
  1: 'hangup',
  2: 'interrupt',
  3: 'quit',
  6: 'aborted',
  9: 'killed',
  11: 'segmentation fault',
  13: 'broken pipe',
  14: 'alarm clock',
  15: 'terminated',
};

/** An exit as envd reports it: exit code -1 and exited false for a signal. */
export function endOf(st: Pick<ExitStatus, 'exitCode' | 'signal'>): EndInfo {
  if (st.signal !== null) return { exitCode: -1, exited: false, status: `signal: ${SIGNALS[st.signal] ?? `signal ${st.signal}`}` };
  const code = st.exitCode ?? -1;
  return { exitCode: code, exited: true, status: `exit status ${code}` };
}

export class Proc {
  handle: GuestExec | GuestPty | undefined;
  end: EndInfo | undefined;
  private readonly subs = new Set<Feed<ProcEvent>>();

  constructor(
    readonly pid: number,
    readonly kind: 'exec' | 'pty',
    readonly config: ProcConfig,
    readonly tag: string | undefined,
    private readonly onEnded: () => void,
  ) {}

  bind(handle: GuestExec | GuestPty): void {
    this.handle = handle;
    const out = (kind: 'stdout' | 'stderr' | 'pty') => (data: Buffer) => this.publish({ kind, data });
    handle.on('stdout', out('stdout'));
    handle.on('stderr', out('stderr'));
    handle.on('data', out('pty'));
    handle.once('exit', (st: ExitStatus) => {
      this.end = endOf(st);
      this.publish({ kind: 'end', end: this.end });
      for (const f of this.subs) f.end();
      this.onEnded();
    });
    handle.once('close', () => {
      if (this.handle !== handle) return;
      this.handle = undefined;
      // The connection to the guest went (a suspend, a kill): the process may run on; streams cannot.
      if (!this.end) for (const f of this.subs) f.end(new ConnectError('the connection to the sandbox was lost', Code.Unavailable));
    });
  }

  private publish(ev: ProcEvent): void {
    for (const f of this.subs) f.push(ev);
  }

  /** Output and end from now on. */
  subscribe(): Feed<ProcEvent> {
    const f = new Feed<ProcEvent>();
    if (this.end) {
      f.push({ kind: 'end', end: this.end });
      f.end();
    } else this.subs.add(f);
    return f;
  }

  unsubscribe(f: Feed<ProcEvent>): void {
    this.subs.delete(f);
  }
}

export class ProcessTable {
  private readonly procs = new Map<number, Proc>();
  private readonly timers = new Set<NodeJS.Timeout>();

  /** Takes `handle` (just started, events not yet released) into the table. */
  add(handle: GuestExec | GuestPty, kind: 'exec' | 'pty', config: ProcConfig, tag: string | undefined): Proc {
    const pid = handle.pid;
    if (pid === undefined) throw new ConnectError('the guest agent did not report a pid (cella-init protocol 3 needed)', Code.Unimplemented);
    const p = new Proc(pid, kind, config, tag, () => this.forgetLater(pid, p));
    p.bind(handle);
    this.procs.set(pid, p);
    return p;
  }

  private forgetLater(pid: number, p: Proc): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.procs.get(pid) === p) this.procs.delete(pid);
    }, KEEP_ENDED_MS);
    t.unref();
    this.timers.add(t);
  }

  /** The process `sel` names, attached again if its handle went; NotFound when the guest has no such process. */
  async find(agent: EnvdAgent, sel: Selector | undefined): Promise<Proc> {
    if (!sel?.case) throw new ConnectError('a process selector (pid or tag) is required', Code.InvalidArgument);
    const known = sel.case === 'pid' ? this.procs.get(sel.value) : [...this.procs.values()].find((p) => p.tag === sel.value && !p.end);
    if (known && (known.handle || known.end)) return known;
    const match = (i: GuestProcessInfo): boolean => (known ? i.pid === known.pid : sel.case === 'pid' ? i.pid === sel.value : i.label === sel.value);
    const listed = (await agent.listProcesses().catch((e: unknown) => Promise.reject(toConnectError(e)))).find(match);
    if (!listed || listed.status !== undefined) throw notFound(sel);
    const handle = await agent.attach(listed).catch((e: unknown) => Promise.reject(toConnectError(e)));
    if (known) {
      known.bind(handle);
      return known;
    }
    return this.add(handle, listed.kind, configOf(listed), listed.label);
  }

  /** The processes running in the guest, with the config and tag they were started with. */
  async list(agent: EnvdAgent): Promise<{ pid: number; tag?: string; config: ProcConfig }[]> {
    const listed = await agent.listProcesses().catch((e: unknown) => Promise.reject(toConnectError(e)));
    return listed
      .filter((i) => i.status === undefined)
      .map((i) => {
        const p = this.procs.get(i.pid);
        const tag = p?.tag ?? i.label;
        return { pid: i.pid, ...(tag !== undefined && { tag }), config: p?.config ?? configOf(i) };
      });
  }

  /** Drops every handle (the sandbox is gone). */
  clear(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const p of this.procs.values()) p.handle?.detach();
    this.procs.clear();
  }
}

function configOf(i: GuestProcessInfo): ProcConfig {
  return { cmd: i.argv[0] ?? '', args: i.argv.slice(1), envs: i.env, ...(i.cwd !== undefined && { cwd: i.cwd }) };
}

export function notFound(sel: Selector): ConnectError {
  return new ConnectError(`process with ${sel.case} ${String(sel.value)} not found`, Code.NotFound);
}

/** The handle of `p` as a command with a stdin, or a terminal. */
export function isPty(p: Proc, h: GuestExec | GuestPty): h is GuestPty {
  return p.kind === 'pty' && 'resize' in h;
}
