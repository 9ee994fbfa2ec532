/**
 * The requests cellad makes of a guest's agent (cella-init), protocol 2 and
 * 3: the app, commands, terminals, clock, entropy, processes, users, files,
 * stats, environment. Framing and request plumbing live in connection.ts.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { CellaError } from '../contract/index.js';
import { AgentConnection, connectSocket } from './connection.js';
import { GuestFiles } from './files.js';
import { ExecProcess, PtySession, decodeWaitStatus } from './process.js';
import { ENVD_PORT, Msg, encodeClock, encodeEnv, encodePtyOpen, encodeRequest, encodeSpec, type ProcessSpec, type PtySpec, u32 } from './protocol.js';
import { decodeProcInfo, decodeStats, decodeUser, type GuestProcessInfo, type GuestStats, type UserInfo } from './replies.js';

export interface ExecResult {
  exitCode: number | null;
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
  /** Output beyond `maxOutputBytes` of a stream was dropped. */
  truncated?: boolean;
}

export interface ExecOptions {
  onOutput?: (stream: 'stdout' | 'stderr', data: Buffer) => void;
  timeoutMs?: number;
  /** Per stream; what a guest prints beyond it is dropped (default 256 MiB). */
  maxOutputBytes?: number;
}

export interface SpawnOptions {
  /** 'pipe' keeps stdin open for write() until closeStdin() (protocol 3); 'none' (default) gives it spec.stdin, then EOF. */
  stdin?: 'pipe' | 'none';
}
/** The most processes one EXEC_LIST may report (a guest listing more is lying). */
const LIST_MAX_PROCESSES = 4096;

/** Host side of the control port (events: see AgentConnection). */
export class AgentClient extends AgentConnection {
  /** Files in the guest (protocol 3). */
  readonly fs: GuestFiles;
  private listing: Promise<unknown> = Promise.resolve();

  private constructor(socket: Socket) {
    super(socket);
    this.fs = new GuestFiles(this);
  }

  static async connect(path: string): Promise<AgentClient> {
    return new AgentClient(await connectSocket(path));
  }

  // ---------- protocol 2 ----------

  async startApp(spec: ProcessSpec): Promise<void> {
    await this.request(Msg.START, encodeSpec(spec), { what: 'starting the app', legacy: true });
  }

  /** Runs a command in the guest to completion, streaming its output to `onOutput`. */
  async exec(spec: ProcessSpec, options: ExecOptions = {}): Promise<ExecResult> {
    const p = await this.startExec(spec, false, true);
    const max = options.maxOutputBytes ?? 256 << 20;
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const sizes = { stdout: 0, stderr: 0 };
    let truncated = false;
    for (const stream of ['stdout', 'stderr'] as const) {
      p.on(stream, (data: Buffer) => {
        options.onOutput?.(stream, data);
        const room = max - sizes[stream];
        if (data.length > room) truncated = true;
        if (room > 0) out[stream].push(room < data.length ? data.subarray(0, room) : data);
        sizes[stream] += Math.min(room, data.length);
      });
    }
    const finished = new Promise<ExecResult>((resolve, reject) => {
      p.once('close', () => {
        if (!p.exitStatus) return reject(new CellaError('AGENT_ERROR', 'control connection to the guest closed'));
        const result: ExecResult = { ...decodeWaitStatus(p.exitStatus.status), stdout: Buffer.concat(out.stdout), stderr: Buffer.concat(out.stderr) };
        if (truncated) result.truncated = true;
        resolve(result);
      });
    });
    if (options.timeoutMs === undefined) return finished;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void p.signal(9).catch(() => {});
        reject(new CellaError('AGENT_TIMEOUT', `command did not finish within ${options.timeoutMs} ms`));
      }, options.timeoutMs);
    });
    try {
      return await Promise.race([finished, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async signal(execId: number, signal: number): Promise<void> {
    await this.request(Msg.SIGNAL, u32(signal), { id: execId, what: `signal ${signal}`, legacy: true });
  }

  /**
   * Opens a terminal in the guest running `spec.argv` (empty or absent: /bin/sh) with
   * TERM=xterm-256color and a default PATH unless `spec.env` sets them. At most 64 at a time
   * (8 on a protocol-2 guest).
   */
  async openPty(spec: PtySpec): Promise<PtySession> {
    const body = encodePtyOpen(spec);
    const id = this.allocId();
    const session = new PtySession(id, this);
    try {
      const f = await this.request(Msg.PTY_OPEN, body, { id, what: 'opening a terminal', legacy: true });
      session.started(f.body.length === 4 ? f.body.readUInt32LE(0) : undefined);
    } catch (err) {
      // A late answer must not leave a terminal nobody knows of.
      this.unregister(id);
      this.send(Msg.PTY_CLOSE, id);
      throw err;
    }
    setImmediate(() => session.release());
    return session;
  }

  /** Hangs up every terminal in the guest, also those an earlier connection (before a suspend, a restart) left. */
  closeAllPtys(): void {
    this.send(Msg.PTY_CLOSE, 0);
  }

  async setClock(ms = Date.now()): Promise<void> {
    await this.request(Msg.SET_CLOCK, encodeClock(ms), { what: 'setting the clock', legacy: true });
  }

  async reseed(bytes = randomBytes(64)): Promise<void> {
    await this.request(Msg.RESEED, bytes, { what: 'reseeding', legacy: true });
  }

  async sync(timeoutMs = 30_000): Promise<void> {
    await this.request(Msg.SYNC, undefined, { timeoutMs, what: 'sync', legacy: true });
  }

  async identify(vmId: string): Promise<void> {
    await this.request(Msg.IDENTIFY, Buffer.from(vmId), { what: 'setting the hostname', legacy: true });
  }

  // ---------- protocol 3 ----------

  private async startExec(spec: ProcessSpec, pipe: boolean, legacy: boolean): Promise<ExecProcess> {
    const id = this.allocId();
    const p = new ExecProcess(id, this, pipe);
    try {
      const f = await this.request(Msg.EXEC, encodeSpec(pipe ? { ...spec, stdin: undefined, stdinPipe: true } : spec), {
        id,
        what: `exec ${spec.argv[0] ?? ''}`,
        legacy,
      });
      p.started(f.body.length === 4 ? f.body.readUInt32LE(0) : undefined);
    } catch (err) {
      this.unregister(id);
      throw err;
    }
    setImmediate(() => p.release());
    return p;
  }

  /**
   * Starts a command and hands back its process: pid, output events, exit.
   * With stdin 'pipe' (protocol 3) its stdin stays open: spec.stdin is written
   * first, then write() and closeStdin(). Processes outlive this connection.
   */
  async spawn(spec: ProcessSpec, opts: SpawnOptions = {}): Promise<ExecProcess> {
    const pipe = opts.stdin === 'pipe';
    if (pipe || spec.groups !== undefined || spec.label !== undefined) await this.requireV3('a process with stdin pipe, groups or a label');
    const p = await this.startExec(spec, pipe, false);
    if (pipe && spec.stdin?.length) void p.write(spec.stdin).catch(() => {}); // its failure shows on the next write
    return p;
  }

  /**
   * The processes and terminals in the guest, those of earlier connections
   * included (alive, or ended within the last 5 minutes): for attach().
   */
  async listProcesses(): Promise<GuestProcessInfo[]> {
    await this.requireV3('listing processes');
    // The guest walks one listing at a time: calls wait their turn.
    const turn = this.listing.then(() => this.listNow());
    this.listing = turn.catch(() => {});
    return turn;
  }

  private async listNow(): Promise<GuestProcessInfo[]> {
    const list: GuestProcessInfo[] = [];
    await this.request(Msg.EXEC_LIST, undefined, {
      what: 'listing processes',
      timeoutMs: 30_000,
      collect: (f) => {
        const info = decodeProcInfo(f.body);
        if (!info || list.length >= LIST_MAX_PROCESSES) return new CellaError('AGENT_ERROR', 'guest agent: malformed process list');
        list.push(info);
        return undefined;
      },
    });
    return list;
  }

  /**
   * A new handle on a process or terminal an earlier connection started (from
   * listProcesses()): its output from now on (what it printed while no host
   * held it waits in its pipe or terminal), and its exit, at once if it ended.
   */
  async attach(info: Pick<GuestProcessInfo, 'id' | 'pid' | 'kind'>): Promise<ExecProcess | PtySession> {
    await this.requireV3('attaching a process');
    const h = info.kind === 'pty' ? new PtySession(info.id, this) : new ExecProcess(info.id, this, true);
    h.started(info.pid);
    try {
      await this.request(Msg.ATTACH, undefined, { id: info.id, what: `attaching process ${info.id}` });
    } catch (err) {
      this.unregister(info.id);
      throw err;
    }
    setImmediate(() => h.release());
    return h;
  }

  /** A user of the guest's /etc/passwd, by name or uid, with its groups from /etc/group. NOT_FOUND when it has none. */
  async lookupUser(user: string | number): Promise<UserInfo> {
    const what = `looking up user ${user}`;
    await this.requireV3(what);
    const f = await this.request(Msg.USER_LOOKUP, encodeRequest(typeof user === 'number' ? { uid: user } : { name: user }), { what });
    const u = decodeUser(f.body);
    if (!u) throw new CellaError('AGENT_ERROR', `guest agent: malformed answer to ${what}`);
    return u;
  }

  /** CPU, memory and disk figures of the guest; CPU use is since the previous call. */
  async stats(): Promise<GuestStats> {
    await this.requireV3('stats');
    const s = decodeStats((await this.request(Msg.STATS, undefined, { what: 'stats' })).body);
    if (!s) throw new CellaError('AGENT_ERROR', 'guest agent: malformed stats');
    return s;
  }

  /** The sandbox's environment: every later process and terminal gets it, under its own spec's env. Replaces the previous one. */
  async setEnv(env: Record<string, string>): Promise<void> {
    await this.requireV3('setting the environment');
    await this.request(Msg.SET_ENV, encodeEnv(env), { what: 'setting the environment' });
  }

  /** Starts the guest's envs listener on 127.0.0.1:`port` (GET /envs, GET /health); a second call changes nothing. */
  async startEnvdListener(port = ENVD_PORT): Promise<void> {
    await this.requireV3('the envs listener');
    const body = Buffer.alloc(2);
    body.writeUInt16LE(port, 0);
    await this.request(Msg.ENVD_LISTEN, body, { what: 'starting the envs listener' });
  }
}
