import { EventEmitter } from 'node:events';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { CellaError } from '../errors/index.js';
import { FrameDecoder, Msg, encodeClock, encodeFrame, encodeSpec, type Frame, type ProcessSpec } from './protocol.js';

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

/**
 * Host side of the control port. Events: 'app-exit' (status), 'hello' (version), 'close'.
 */
export class AgentClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly execs = new Map<number, ExecState>();
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

  private dispatch(f: Frame): void {
    switch (f.type) {
      case Msg.HELLO:
        this.emit('hello', f.body.length >= 4 ? f.body.readUInt32LE(0) : 0);
        return;
      case Msg.APP_EXIT:
        this.emit('app-exit', f.body.readInt32LE(0));
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
        if (!e) return;
        this.execs.delete(f.id);
        e.done({ ...decodeWaitStatus(f.body.readInt32LE(0)), stdout: Buffer.concat(e.stdout), stderr: Buffer.concat(e.stderr) });
        return;
      }
      default: {
        const p = this.pending.get(f.id);
        if (!p) return;
        this.pending.delete(f.id);
        clearTimeout(p.timer);
        if (f.type === Msg.ERROR) p.reject(new CellaError('AGENT_ERROR', `guest agent: ${f.body.toString()}`));
        else p.resolve(f);
      }
    }
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
    this.emit('close');
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
