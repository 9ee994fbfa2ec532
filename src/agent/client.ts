import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import { CellaError } from '../contract/index.js';
import type { Channel, RequestOptions, Sink } from './channel.js';
import { guestError, isUnknownMessage, unsupported } from './errors.js';
import { GuestFiles } from './files.js';
import { ExecProcess, PtySession, decodeWaitStatus } from './process.js';
import {
  ENVD_PORT,
  FrameDecoder,
  Msg,
  encodeClock,
  encodeEnv,
  encodeFrame,
  encodePtyOpen,
  encodeRequest,
  encodeSpec,
  type Frame,
  type ProcessSpec,
  type PtySpec,
  u32,
} from './protocol.js';
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

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  type: number;
  opts: RequestOptions;
}

/** The host emits each guest signal ('activity', 'suspend-request') at most once per this many ms, whatever the guest sends. */
export const GUEST_SIGNAL_MIN_INTERVAL_MS = 500;
/** The most processes one EXEC_LIST may report (a guest listing more is lying). */
const LIST_MAX_PROCESSES = 4096;
/** Frame types whose first version is 3: a protocol-2 guest answers them "unknown message". */
const FIRST_V3 = Msg.SESSION;

/**
 * Host side of the control port. Events: 'app-exit' (status), 'hello' (version), 'close',
 * 'activity' and 'suspend-request' (no arguments: requests from inside the guest, at most
 * one of each per GUEST_SIGNAL_MIN_INTERVAL_MS).
 *
 * A new connection tells the guest (SESSION) that it is a new host: processes
 * and terminals earlier ones started keep running, detached, until attach()
 * (see listProcesses()); their streams and watches are dropped.
 */
export class AgentClient extends EventEmitter implements Channel {
  /** Files in the guest (protocol 3). */
  readonly fs: GuestFiles;
  private nextId = randomInt(1, 2 ** 31);
  private readonly pending = new Map<number, Pending>();
  private readonly chains = new Map<number, Promise<unknown>>();
  private readonly sinks = new Map<number, Sink>();
  private readonly lastSignal = new Map<number, number>();
  private readonly decoder = new FrameDecoder();
  private version: number | undefined;
  private versionAsked: Promise<number> | undefined;
  private isClosed = false;
  private listing: Promise<unknown> = Promise.resolve();

  private constructor(private readonly socket: net.Socket) {
    super();
    this.fs = new GuestFiles(this);
    socket.on('data', (chunk) => {
      let frames: Frame[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        socket.destroy(err as Error);
        return;
      }
      for (const f of frames) this.dispatch(f);
    });
    socket.on('close', () => this.shutdown(new CellaError('AGENT_ERROR', 'control connection to the guest closed')));
    socket.on('error', () => {});
    // First on the new byte stream: a protocol-2 guest answers "unknown message", to id 0, which nobody waits for.
    this.send(Msg.SESSION, 0);
  }

  static connect(path: string): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path);
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(new AgentClient(s));
      });
      s.once('error', (e) => reject(new CellaError('AGENT_ERROR', `cannot connect to the guest control port: ${e.message}`, { cause: e })));
    });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Frames come from an untrusted guest: bodies are checked before they are read, anything unexpected is ignored. */
  private dispatch(f: Frame): void {
    switch (f.type) {
      case Msg.HELLO: {
        // A (re)opened guest port: its version from now on. A body too short to hold one says nothing.
        const v = f.body.length >= 4 ? f.body.readUInt32LE(0) : undefined;
        if (v !== undefined) this.version = v;
        this.emit('hello', v ?? 0);
        return;
      }
      case Msg.APP_EXIT:
        if (f.body.length === 4) this.emit('app-exit', f.body.readInt32LE(0));
        return;
      case Msg.EXEC_OUT:
      case Msg.EXEC_EXIT:
      case Msg.EXEC_IN_ACK:
      case Msg.PTY_OUT:
      case Msg.PTY_EXIT:
      case Msg.FS_DATA:
      case Msg.FS_END:
      case Msg.FS_EVENT:
        this.sinks.get(f.id)?.frame(f);
        return;
      case Msg.ACTIVITY:
        this.guestSignal(f.type, 'activity');
        return;
      case Msg.SUSPEND_REQUEST:
        this.guestSignal(f.type, 'suspend-request');
        return;
      case Msg.PROC_INFO:
      case Msg.FS_ENTRY: {
        const p = this.pending.get(f.id);
        const err = p?.opts.collect?.(f);
        if (p && err) this.settle(f.id, p, err);
        return;
      }
      case Msg.OK:
      case Msg.ERROR:
      case Msg.PONG: {
        const p = this.pending.get(f.id);
        if (!p || (f.type === Msg.PONG) !== (p.type === Msg.PING)) return;
        if (f.type !== Msg.ERROR) this.settle(f.id, p, f);
        else if (p.type >= FIRST_V3 && isUnknownMessage(f)) this.settle(f.id, p, unsupported(p.opts.what ?? `message ${p.type}`, 2));
        else this.settle(f.id, p, guestError(f, p.opts.legacy));
      }
    }
  }

  private settle(id: number, p: Pending, outcome: Frame | Error): void {
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  private guestSignal(type: number, event: 'activity' | 'suspend-request'): void {
    const now = performance.now();
    const last = this.lastSignal.get(type);
    if (last !== undefined && now - last < GUEST_SIGNAL_MIN_INTERVAL_MS) return;
    this.lastSignal.set(type, now);
    this.emit(event);
  }

  private shutdown(err: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const [id, p] of [...this.pending]) this.settle(id, p, err);
    const sinks = [...this.sinks.values()];
    this.sinks.clear();
    for (const s of sinks) s.end();
    this.emit('close');
  }

  // ---------- Channel: what handles, streams and watches use ----------

  send(type: number, id: number, body?: Buffer): void {
    if (!this.isClosed) this.socket.write(encodeFrame(type, id, body));
  }

  async sendDrained(type: number, id: number, body: Buffer): Promise<void> {
    if (this.isClosed) throw new CellaError('AGENT_ERROR', 'control connection to the guest is closed');
    if (this.socket.write(encodeFrame(type, id, body))) return;
    await Promise.race([once(this.socket, 'drain'), once(this, 'close')]);
    if (this.isClosed) throw new CellaError('AGENT_ERROR', 'control connection to the guest closed');
  }

  allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
      if (!this.pending.has(id) && !this.sinks.has(id) && !this.chains.has(id)) return id;
    }
  }

  register(id: number, sink: Sink): void {
    this.sinks.get(id)?.end();
    this.sinks.set(id, sink);
  }

  unregister(id: number): void {
    const s = this.sinks.get(id);
    if (!s) return;
    this.sinks.delete(id);
    s.end();
  }

  request(type: number, body: Buffer | undefined, opts: RequestOptions = {}): Promise<Frame> {
    const id = opts.id ?? this.allocId();
    // One request per id at a time: the answer names only the id.
    const prev = this.chains.get(id) ?? Promise.resolve();
    const p = prev.then(() => this.requestNow(type, body, id, opts));
    const tail = p.catch(() => {});
    this.chains.set(id, tail);
    void tail.then(() => {
      if (this.chains.get(id) === tail) this.chains.delete(id);
    });
    return p;
  }

  private requestNow(type: number, body: Buffer | undefined, id: number, opts: RequestOptions): Promise<Frame> {
    if (this.isClosed) return Promise.reject(new CellaError('AGENT_ERROR', 'control connection to the guest is closed'));
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CellaError('AGENT_TIMEOUT', `guest agent did not answer ${opts.what ?? `message ${type}`} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, type, opts });
      this.socket.write(encodeFrame(type, id, body));
    });
  }

  /** The guest's protocol version: from its HELLO, else asked (a protocol-3 PONG carries it; a protocol-2 one is empty). */
  async protocolVersion(): Promise<number> {
    if (this.version !== undefined) return this.version;
    this.versionAsked ??= this.request(Msg.PING, undefined, { what: 'ping' }).then((f) => (this.version ??= f.body.length >= 4 ? f.body.readUInt32LE(0) : 2));
    return this.versionAsked.finally(() => (this.versionAsked = undefined));
  }

  async requireV3(what: string): Promise<void> {
    const v = await this.protocolVersion();
    if (v < 3) throw unsupported(what, v);
  }

  // ---------- protocol 2 ----------

  /**
   * Resolves once the guest answers a PING. A PING is sent again after
   * 0.5, 1, 2, 4... s, each kept waiting until the deadline: the guest's
   * driver drops what arrives while it closes its port after a host went
   * away (an adopted or resumed VM), and a slow guest (TCG under load)
   * still gets the whole deadline to answer the first one.
   */
  async ping(timeoutMs = 10_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const ids: number[] = [];
    let again: NodeJS.Timeout | undefined;
    try {
      const f = await new Promise<Frame>((resolve, reject) => {
        const attempt = (gap: number): void => {
          const left = deadline - performance.now();
          if (left <= 0) return;
          const id = this.allocId();
          ids.push(id);
          this.requestNow(Msg.PING, undefined, id, { timeoutMs: left, what: 'ping', legacy: true }).then(resolve, reject);
          again = setTimeout(() => attempt(gap * 2), gap);
        };
        attempt(500);
      });
      if (f.body.length >= 4) this.version ??= f.body.readUInt32LE(0);
    } finally {
      clearTimeout(again);
      for (const id of ids) {
        const p = this.pending.get(id);
        if (p?.type === Msg.PING) {
          this.pending.delete(id);
          clearTimeout(p.timer);
        }
      }
    }
  }

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

  close(): void {
    this.socket.destroy();
  }
}
