/**
 * Handles on processes in the guest: ExecProcess (a command, its stdout,
 * stderr and stdin) and PtySession (a terminal). Both run on in the guest
 * when the handle goes: detach() stops this handle's events, a closed
 * connection ends them; AgentClient.attach() makes a new handle (protocol 3).
 */
import { EventEmitter } from 'node:events';
import { constants } from 'node:os';
import { CellaError } from '../contract/index.js';
import type { Channel } from './channel.js';
import { errnoError } from './errors.js';
import { Msg, STDIN_WINDOW, encodeWinsize, type Frame, u32 } from './protocol.js';
import { decodeInAck } from './replies.js';

/** How a process ended: its raw wait status, decoded. */
export interface ExitStatus {
  status: number;
  exitCode: number | null;
  signal: number | null;
}
/** The name protocol-2 callers know it by. */
export type PtyExit = ExitStatus;

export function decodeWaitStatus(status: number): { exitCode: number | null; signal: number | null } {
  const sig = status & 0x7f;
  return sig === 0 ? { exitCode: (status >> 8) & 0xff, signal: null } : { exitCode: null, signal: sig };
}

/** Input is sent in frames of at most this many bytes. */
const IN_CHUNK = 32 * 1024;

/**
 * What both handles share: events held until the caller had a turn to listen
 * (they start on the turn after the handle was returned), the exit, signals,
 * and the end. 'close' is always the last event; alone (no 'exit') it means
 * the handle was detached or the connection lost.
 */
abstract class GuestHandle extends EventEmitter {
  /** Set once the process ended. */
  exitStatus: ExitStatus | undefined;
  private ended = false;
  private held: (() => void)[] | undefined = [];
  private guestPid: number | undefined;

  protected constructor(
    readonly id: number,
    protected readonly ch: Channel,
  ) {
    super();
    ch.register(id, { frame: (f) => this.onFrame(f), end: () => this.onEnd() });
  }

  /** The process's pid in the guest (undefined from a protocol-2 guest). */
  get pid(): number | undefined {
    return this.guestPid;
  }

  /** Whether the handle is over (its 'close' may still be on its way to listeners). */
  get closed(): boolean {
    return this.ended;
  }

  /** @internal The guest's answer to the start: its pid. */
  started(pid: number | undefined): void {
    this.guestPid = pid;
  }

  /** @internal Starts delivering events. */
  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const fn of held) fn();
  }

  protected deliver(fn: () => void): void {
    if (this.held) this.held.push(fn);
    else fn();
  }

  /** Sends a signal to the process's session (its process group). NOT_FOUND once it is gone. */
  async signal(signal: number): Promise<void> {
    if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw new CellaError('INVALID_ARGUMENT', `bad signal ${signal}`);
    await this.ch.request(Msg.SIGNAL, u32(signal), { id: this.id, what: `signal ${signal} to process ${this.id}` });
  }

  /** SIGKILL to its session. */
  kill(): Promise<void> {
    return this.signal(9);
  }

  /** Stops this handle's events ('close' follows); the process runs on in the guest. */
  detach(): void {
    this.ch.unregister(this.id);
  }

  protected abstract onFrame(f: Frame): void;

  /** A wait status arrived: 'exit', then the end. */
  protected exited(body: Buffer): void {
    if (body.length !== 4 || this.ended) return;
    const status = body.readInt32LE(0);
    this.deliver(() => {
      this.exitStatus = { status, ...decodeWaitStatus(status) };
      this.emit('exit', this.exitStatus);
    });
    this.ch.unregister(this.id);
  }

  protected onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.deliver(() => this.emit('close'));
  }
}

interface PendingWrite {
  end: number; // stdin offset just past its last byte
  data: Buffer;
  sent: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * A command in the guest. Events: 'stdout' and 'stderr' (Buffer), 'exit'
 * (ExitStatus), then 'close'. With stdin 'pipe' (protocol 3), write() feeds
 * its stdin and closeStdin() ends it.
 */
export class ExecProcess extends GuestHandle {
  private readonly writes: PendingWrite[] = [];
  private readonly sentAll: (() => void)[] = []; // closeStdin() waiting for everything to be sent
  private queued = 0; // stdin offset after the last byte accepted by write()
  private sent = 0;
  private acked = 0;
  private stdinError: Error | undefined;
  private closing: Promise<void> | undefined;

  /** @internal Made by AgentClient.spawn() and attach(). */
  constructor(
    id: number,
    ch: Channel,
    private readonly stdinPipe: boolean,
  ) {
    super(id, ch);
  }

  /**
   * Writes to the process's stdin. Resolves once the guest wrote it into the
   * pipe; the guest holds at most STDIN_WINDOW bytes ahead of the process,
   * the rest waits here. Rejects (errno EPIPE) when stdin is closed or the
   * process is gone.
   */
  write(data: Buffer | string): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    if (!this.stdinPipe) return Promise.reject(new CellaError('INVALID_STATE', `process ${this.id} was started without stdin 'pipe'`));
    if (this.closing) return Promise.reject(new CellaError('INVALID_STATE', `stdin of process ${this.id} is closed`));
    if (this.stdinError) return Promise.reject(this.stdinError);
    if (this.closed) return Promise.reject(errnoError(constants.errno.EPIPE, `stdin of process ${this.id} (it ended, or the handle did)`));
    if (buf.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.queued += buf.length;
      this.writes.push({ end: this.queued, data: buf, sent: 0, resolve, reject });
      this.pump();
    });
  }

  /** Closes stdin once what was written reached the guest; the process reads EOF after it. */
  closeStdin(): Promise<void> {
    if (!this.stdinPipe) return Promise.reject(new CellaError('INVALID_STATE', `process ${this.id} was started without stdin 'pipe'`));
    this.closing ??= this.afterSent().then(async () => {
      await this.ch.request(Msg.EXEC_CLOSE_IN, undefined, { id: this.id, what: `closing stdin of process ${this.id}` });
    });
    return this.closing;
  }

  private afterSent(): Promise<void> {
    if (this.sent === this.queued || this.stdinError) return Promise.resolve();
    return new Promise((resolve) => this.sentAll.push(resolve));
  }

  /** Sends what the window allows. */
  private pump(): void {
    for (const w of this.writes) {
      while (w.sent < w.data.length && this.sent - this.acked < STDIN_WINDOW && !this.ch.closed) {
        const n = Math.min(IN_CHUNK, w.data.length - w.sent, STDIN_WINDOW - (this.sent - this.acked));
        this.ch.send(Msg.EXEC_IN, this.id, w.data.subarray(w.sent, w.sent + n));
        w.sent += n;
        this.sent += n;
      }
      if (w.sent < w.data.length) break;
    }
    if (this.sent === this.queued) for (const fn of this.sentAll.splice(0)) fn();
  }

  private failStdin(e: Error): void {
    this.stdinError ??= e;
    for (const w of this.writes.splice(0)) w.reject(this.stdinError);
    for (const fn of this.sentAll.splice(0)) fn();
  }

  private ack(body: Buffer): void {
    const a = decodeInAck(body);
    // More than was sent would be a lie of the guest's: stdin is then given up, never trusted.
    if (!a || a.bytes > this.sent - this.acked) return this.failStdin(errnoError(constants.errno.EPIPE, `stdin of process ${this.id} (bad acknowledgement)`));
    this.acked += a.bytes;
    if (a.errno) return this.failStdin(errnoError(a.errno, `stdin of process ${this.id}`));
    while (this.writes[0] && this.writes[0].end <= this.acked) this.writes.shift()?.resolve();
    this.pump();
  }

  protected onFrame(f: Frame): void {
    if (f.type === Msg.EXEC_OUT) {
      const data = Buffer.from(f.body);
      const stream = f.stream === 2 ? 'stderr' : 'stdout';
      this.deliver(() => this.emit(stream, data));
    } else if (f.type === Msg.EXEC_EXIT) this.exited(f.body);
    else if (f.type === Msg.EXEC_IN_ACK) this.ack(f.body);
  }

  protected override onEnd(): void {
    if (this.writes.length) this.failStdin(errnoError(constants.errno.EPIPE, `stdin of process ${this.id}`));
    super.onEnd();
  }
}

/**
 * An interactive terminal in the guest: its process runs in its own session
 * with the terminal as controlling tty. Events: 'data' (Buffer) output of the
 * terminal, 'exit' (ExitStatus), then 'close'.
 */
export class PtySession extends GuestHandle {
  private hungUp = false;

  /** @internal Made by AgentClient.openPty() and attach(). */
  constructor(id: number, ch: Channel) {
    super(id, ch);
  }

  /** Types `data` into the terminal. Ignored once the session is over. */
  write(data: Buffer | string): void {
    if (this.closed) return;
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length; off += IN_CHUNK) this.ch.send(Msg.PTY_IN, this.id, buf.subarray(off, off + IN_CHUNK));
  }

  /** Sets the terminal's size; its foreground job gets SIGWINCH. RangeError unless both are integers in 1..65535. */
  resize(cols: number, rows: number): void {
    const body = encodeWinsize(rows, cols);
    if (!this.closed) this.ch.send(Msg.PTY_RESIZE, this.id, body);
  }

  /** Hangs the terminal up: SIGHUP to its session and foreground job, SIGKILL 2 s later if they linger; 'exit' follows. */
  close(): void {
    if (this.closed || this.hungUp) return;
    this.hungUp = true;
    this.ch.send(Msg.PTY_CLOSE, this.id);
  }

  protected onFrame(f: Frame): void {
    if (f.type === Msg.PTY_OUT && f.body.length > 0) {
      const data = Buffer.from(f.body);
      this.deliver(() => this.emit('data', data));
    } else if (f.type === Msg.PTY_EXIT) this.exited(f.body);
  }
}
