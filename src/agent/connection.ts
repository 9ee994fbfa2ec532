/**
 * The host end of a guest's control port: frames in and out, requests and
 * their answers by id, the sinks of streams and watches (the Channel that
 * handles use), the guest's protocol version and its signals. AgentClient
 * (client.ts) adds the requests themselves.
 */
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { CellaError } from '../contract/index.js';
import type { Channel, RequestOptions, Sink } from './channel.js';
import { guestError, isUnknownMessage, unsupported } from './errors.js';
import { FrameDecoder, Msg, encodeFrame, type Frame } from './protocol.js';

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  type: number;
  opts: RequestOptions;
}

/** The host emits each guest signal ('activity', 'suspend-request') at most once per this many ms, whatever the guest sends. */
export const GUEST_SIGNAL_MIN_INTERVAL_MS = 500;
/** Frame types whose first version is 3: a protocol-2 guest answers them "unknown message". */
const FIRST_V3 = Msg.SESSION;

/** Opens the control port's unix socket. */
export function connectSocket(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(path);
    s.once('connect', () => {
      s.removeListener('error', reject);
      resolve(s);
    });
    s.once('error', (e) => reject(new CellaError('AGENT_ERROR', `cannot connect to the guest control port: ${e.message}`, { cause: e })));
  });
}

/**
 * Events: 'app-exit' (status), 'hello' (version), 'close', 'activity' and
 * 'suspend-request' (no arguments: requests from inside the guest, at most
 * one of each per GUEST_SIGNAL_MIN_INTERVAL_MS).
 *
 * A new connection tells the guest (SESSION) that it is a new host: processes
 * and terminals earlier ones started keep running, detached, until attached;
 * their streams and watches are dropped.
 */
export class AgentConnection extends EventEmitter implements Channel {
  private nextId = randomInt(1, 2 ** 31);
  private readonly pending = new Map<number, Pending>();
  private readonly chains = new Map<number, Promise<unknown>>();
  private readonly sinks = new Map<number, Sink>();
  private readonly lastSignal = new Map<number, number>();
  private readonly decoder = new FrameDecoder();
  private version: number | undefined;
  private versionAsked: Promise<number> | undefined;
  private isClosed = false;

  protected constructor(private readonly socket: net.Socket) {
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
    // First on the new byte stream: a protocol-2 guest answers "unknown message", to id 0, which nobody waits for.
    this.send(Msg.SESSION, 0);
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
    // The wait that loses the race is aborted: left waiting, each would keep a 'close' and an 'error' listener for the VM's lifetime.
    const ac = new AbortController();
    const waits = [once(this.socket, 'drain', { signal: ac.signal }), once(this, 'close', { signal: ac.signal })];
    for (const w of waits) w.catch(() => {});
    try {
      await Promise.race(waits);
    } finally {
      ac.abort();
    }
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

  /**
   * Resolves once the guest answers a PING. A PING is sent again after
   * 0.5, 1, 2, 4... s, each kept waiting until the deadline: the guest's
   * driver drops what arrives while it closes its port after a host went
   * away (an adopted or resumed VM), and a slow guest (TCG under load)
   * still gets the whole deadline to answer the first one. `firstRetryMs`
   * (the first gap) is there for tests, which need not wait half a second.
   */
  async ping(timeoutMs = 10_000, firstRetryMs = 500): Promise<void> {
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
        attempt(firstRetryMs);
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

  close(): void {
    this.socket.destroy();
  }
}
