import { EventEmitter } from 'node:events';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { CellaError } from '../contract/index.js';
import {
  FrameDecoder,
  Msg,
  encodeClock,
  encodeFrame,
  encodePtyOpen,
  encodeSpec,
  encodeWinsize,
  type Frame,
  type ProcessSpec,
  type PtySpec,
} from './protocol.js';

export interface ExecResult {
  exitCode: number | null;
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
}

export interface ExecOptions {
  onOutput?: (stream: 'stdout' | 'stderr', data: Buffer) => void;
  timeoutMs?: number;
}

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface ExecState {
  stdout: Buffer[];
  stderr: Buffer[];
  options: ExecOptions;
  done: (r: ExecResult) => void;
}

export function decodeWaitStatus(status: number): { exitCode: number | null; signal: number | null } {
  const sig = status & 0x7f;
  return sig === 0 ? { exitCode: (status >> 8) & 0xff, signal: null } : { exitCode: null, signal: sig };
}

/** How a terminal's process ended: its raw wait status, decoded. */
export interface PtyExit {
  status: number;
  exitCode: number | null;
  signal: number | null;
}

/** What the client feeds a session with; kept out of the session's public surface. */
interface PtyFeed {
  data(chunk: Buffer): void;
  exit(status: number): void;
  /** The session is over: after its exit, or because the control connection went. */
  end(): void;
  /** Starts delivering events (held until openPty's caller had a turn to listen). */
  release(): void;
}

/** Input is sent in frames of at most this many bytes. */
const PTY_IN_CHUNK = 32 * 1024;
/** The host emits each guest signal ('activity', 'suspend-request') at most once per this many ms, whatever the guest sends. */
export const GUEST_SIGNAL_MIN_INTERVAL_MS = 500;

/**
 * An interactive terminal in the guest (AgentClient.openPty): its process runs
 * in its own session with the terminal as controlling tty.
 *
 * Events: 'data' (Buffer) output of the terminal; 'exit' (PtyExit) its process
 * ended; then 'close', always last, which alone (no 'exit') means the control
 * connection to the guest was lost. Events start on the turn after openPty()
 * resolved: attach listeners right away.
 */
export class PtySession extends EventEmitter {
  /** Set once the process ended. */
  exitStatus: PtyExit | undefined;
  private ended = false;
  private closing = false;
  private held: (() => void)[] | undefined = [];

  /** @internal Made by AgentClient.openPty. */
  constructor(
    readonly id: number,
    private readonly send: (type: number, body?: Buffer) => void,
    attach: (feed: PtyFeed) => void,
  ) {
    super();
    const deliver = (fn: () => void): void => {
      if (this.held) this.held.push(fn);
      else fn();
    };
    attach({
      data: (chunk) => deliver(() => this.emit('data', chunk)),
      exit: (status) =>
        deliver(() => {
          this.exitStatus = { status, ...decodeWaitStatus(status) };
          this.emit('exit', this.exitStatus);
        }),
      end: () => {
        this.ended = true;
        deliver(() => this.emit('close'));
      },
      release: () => {
        const held = this.held ?? [];
        this.held = undefined;
        for (const fn of held) fn();
      },
    });
  }

  /** Whether the session is over (its 'close' may still be on its way to listeners). */
  get closed(): boolean {
    return this.ended;
  }

  /** Types `data` into the terminal. Ignored once the session is over. */
  write(data: Buffer | string): void {
    if (this.ended) return;
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length; off += PTY_IN_CHUNK) this.send(Msg.PTY_IN, buf.subarray(off, off + PTY_IN_CHUNK));
  }

  /** Sets the terminal's size; its foreground job gets SIGWINCH. RangeError unless both are integers in 1..65535. */
  resize(cols: number, rows: number): void {
    const body = encodeWinsize(rows, cols);
    if (!this.ended) this.send(Msg.PTY_RESIZE, body);
  }

  /** Hangs the terminal up: SIGHUP to its session and foreground job, SIGKILL 2 s later if they linger; 'exit' follows. */
  close(): void {
    if (this.ended || this.closing) return;
    this.closing = true;
    this.send(Msg.PTY_CLOSE);
  }
}

/**
 * Host side of the control port. Events: 'app-exit' (status), 'hello' (version), 'close',
 * 'activity' and 'suspend-request' (no arguments: requests from inside the guest, at most
 * one of each per GUEST_SIGNAL_MIN_INTERVAL_MS).
 */
export class AgentClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly execs = new Map<number, ExecState>();
  private readonly ptys = new Map<number, PtyFeed>();
  private readonly lastSignal = new Map<number, number>();
  private readonly decoder = new FrameDecoder();
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    super();
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

  /** Frames come from an untrusted guest: bodies are checked before they are read, anything unexpected is ignored. */
  private dispatch(f: Frame): void {
    switch (f.type) {
      case Msg.HELLO:
        this.emit('hello', f.body.length >= 4 ? f.body.readUInt32LE(0) : 0);
        return;
      case Msg.APP_EXIT:
        if (f.body.length === 4) this.emit('app-exit', f.body.readInt32LE(0));
        return;
      case Msg.EXEC_OUT: {
        const e = this.execs.get(f.id);
        if (!e) return;
        const data = Buffer.from(f.body);
        const stream = f.stream === 2 ? 'stderr' : 'stdout';
        (stream === 'stderr' ? e.stderr : e.stdout).push(data);
        e.options.onOutput?.(stream, data);
        return;
      }
      case Msg.EXEC_EXIT: {
        const e = this.execs.get(f.id);
        if (!e || f.body.length !== 4) return;
        this.execs.delete(f.id);
        e.done({ ...decodeWaitStatus(f.body.readInt32LE(0)), stdout: Buffer.concat(e.stdout), stderr: Buffer.concat(e.stderr) });
        return;
      }
      case Msg.PTY_OUT:
        if (f.body.length > 0) this.ptys.get(f.id)?.data(Buffer.from(f.body));
        return;
      case Msg.PTY_EXIT: {
        const feed = this.ptys.get(f.id);
        if (!feed || f.body.length !== 4) return;
        this.ptys.delete(f.id);
        feed.exit(f.body.readInt32LE(0));
        feed.end();
        return;
      }
      case Msg.ACTIVITY:
        this.guestSignal(f.type, 'activity');
        return;
      case Msg.SUSPEND_REQUEST:
        this.guestSignal(f.type, 'suspend-request');
        return;
      case Msg.OK:
      case Msg.ERROR:
      case Msg.PONG: {
        const p = this.pending.get(f.id);
        if (!p) return;
        this.pending.delete(f.id);
        clearTimeout(p.timer);
        if (f.type === Msg.ERROR) p.reject(new CellaError('AGENT_ERROR', `guest agent: ${f.body.subarray(0, 1024).toString()}`));
        else p.resolve(f);
      }
    }
  }

  private guestSignal(type: number, event: 'activity' | 'suspend-request'): void {
    const now = performance.now();
    const last = this.lastSignal.get(type);
    if (last !== undefined && now - last < GUEST_SIGNAL_MIN_INTERVAL_MS) return;
    this.lastSignal.set(type, now);
    this.emit(event);
  }

  private shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.execs.clear();
    const ptys = [...this.ptys.values()];
    this.ptys.clear();
    for (const feed of ptys) feed.end();
    this.emit('close');
  }

  private send(type: number, id: number, body?: Buffer): void {
    if (!this.closed) this.socket.write(encodeFrame(type, id, body));
  }

  private request(type: number, body?: Buffer, timeoutMs = 10_000, id = this.nextId++): Promise<Frame> {
    if (this.closed) return Promise.reject(new CellaError('AGENT_ERROR', 'control connection to the guest is closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CellaError('AGENT_TIMEOUT', `guest agent did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.write(encodeFrame(type, id, body));
    });
  }

  async ping(timeoutMs?: number): Promise<void> {
    await this.request(Msg.PING, undefined, timeoutMs);
  }

  async startApp(spec: ProcessSpec): Promise<void> {
    await this.request(Msg.START, encodeSpec(spec));
  }

  /** Runs a command in the guest to completion, streaming its output to `onOutput`. */
  async exec(spec: ProcessSpec, options: ExecOptions = {}): Promise<ExecResult> {
    const id = this.nextId++;
    const finished = new Promise<ExecResult>((done) => this.execs.set(id, { stdout: [], stderr: [], options, done }));
    try {
      await this.request(Msg.EXEC, encodeSpec(spec), 10_000, id);
    } catch (err) {
      this.execs.delete(id);
      throw err;
    }
    if (options.timeoutMs === undefined) return finished;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void this.signal(id, 9).catch(() => {});
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
    const body = Buffer.alloc(4);
    body.writeUInt32LE(signal, 0);
    await this.request(Msg.SIGNAL, body, 10_000, execId);
  }

  /**
   * Opens a terminal in the guest running `spec.argv` (empty or absent: /bin/sh) with
   * TERM=xterm-256color and a default PATH unless `spec.env` sets them. At most 8 at a time.
   */
  async openPty(spec: PtySpec): Promise<PtySession> {
    const body = encodePtyOpen(spec);
    const id = this.nextId++;
    let feed: PtyFeed | undefined;
    const session = new PtySession(id, (type, b) => this.send(type, id, b), (f) => (feed = f));
    const f = feed as PtyFeed;
    this.ptys.set(id, f);
    try {
      await this.request(Msg.PTY_OPEN, body, 10_000, id);
    } catch (err) {
      // A late answer must not leave a terminal nobody knows of.
      if (this.ptys.delete(id)) this.send(Msg.PTY_CLOSE, id);
      throw err;
    }
    setImmediate(() => f.release());
    return session;
  }

  /** Hangs up every terminal in the guest, also those an earlier connection (before a suspend, a restart) left. */
  closeAllPtys(): void {
    this.send(Msg.PTY_CLOSE, 0);
  }

  async setClock(ms = Date.now()): Promise<void> {
    await this.request(Msg.SET_CLOCK, encodeClock(ms));
  }

  async reseed(bytes = randomBytes(64)): Promise<void> {
    await this.request(Msg.RESEED, bytes);
  }

  async sync(timeoutMs = 30_000): Promise<void> {
    await this.request(Msg.SYNC, undefined, timeoutMs);
  }

  async identify(vmId: string): Promise<void> {
    await this.request(Msg.IDENTIFY, Buffer.from(vmId));
  }

  close(): void {
    this.socket.destroy();
  }
}
