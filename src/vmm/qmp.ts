import { EventEmitter } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CellaError } from '../contract/index.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

type Reply = { return?: unknown; error?: { class: string; desc: string }; id?: number };

/** Splits a byte stream into QMP's newline-delimited JSON messages. */
export class QmpLineParser {
  private partial = '';

  push(chunk: string): unknown[] {
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    return lines.filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as unknown);
  }
}

/**
 * A QMP connection. Commands are answered in order (QMP is sequential), so a
 * queue of waiters is enough; `id`s are still sent so replies can be checked.
 * Emits 'event' (QmpEvent) and 'close'.
 */
export class QmpClient extends EventEmitter {
  private readonly parser = new QmpLineParser();
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; command: string }>();
  private nextId = 1;
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      let messages: unknown[];
      try {
        messages = this.parser.push(chunk);
      } catch (err) {
        socket.destroy(err as Error);
        return;
      }
      for (const m of messages) this.dispatch(m as Reply & QmpEvent);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.values()) w.reject(new CellaError('QEMU_EXITED', `QMP connection closed during ${w.command}`));
      this.waiting.clear();
      this.emit('close');
    });
  }

  /** Connects, retrying while QEMU creates the socket, then leaves capability negotiation mode. */
  static async connect(path: string, timeoutMs = 5000, isAlive: () => boolean = () => true): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 1; ; delay = Math.min(delay * 2, 10)) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once('connect', () => {
            s.removeListener('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        try {
          await client.greeting(Math.max(deadline - Date.now(), 100));
          await client.execute('qmp_capabilities');
        } catch (err) {
          // QEMU serves one QMP client at a time: a connection left waiting would take the next turn.
          client.close();
          throw err;
        }
        return client;
      } catch (err) {
        if (!isAlive()) throw new CellaError('QEMU_EXITED', 'QEMU exited before its QMP socket answered', { cause: err });
        if (Date.now() > deadline) throw new CellaError('QMP_ERROR', `QMP socket ${path} did not answer within ${timeoutMs} ms`, { cause: err });
        await sleep(delay);
      }
    }
  }

  private greetingWaiter: ((ok: boolean) => void) | undefined;

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CellaError('QMP_ERROR', 'no QMP greeting')), timeoutMs);
      this.greetingWaiter = (ok) => {
        clearTimeout(timer);
        if (ok) resolve();
        else reject(new CellaError('QMP_ERROR', 'bad QMP greeting'));
      };
      this.once('close', () => reject(new CellaError('QEMU_EXITED', 'QMP closed before greeting')));
    });
  }

  private dispatch(m: Reply & QmpEvent & { QMP?: unknown }): void {
    if (m.QMP !== undefined) {
      this.greetingWaiter?.(true);
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof m.event === 'string') {
      this.emit('event', m);
      this.emit(m.event, m.data ?? {});
      return;
    }
    const id = typeof m.id === 'number' ? m.id : undefined;
    const w = id === undefined ? undefined : this.waiting.get(id);
    if (!w || id === undefined) return;
    this.waiting.delete(id);
    if (m.error) w.reject(new CellaError('QMP_ERROR', `${w.command}: ${m.error.class}: ${m.error.desc}`, { details: { qmpClass: m.error.class } }));
    else w.resolve(m.return);
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new CellaError('QEMU_EXITED', `QMP is closed; cannot run ${command}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  /** Resolves when the named event arrives and `match` accepts its data. */
  waitEvent(name: string, match: (data: Record<string, unknown>) => boolean = () => true, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const onEvent = (data: Record<string, unknown>): void => {
        if (!match(data)) return;
        cleanup();
        resolve(data);
      };
      const onClose = (): void => {
        cleanup();
        reject(new CellaError('QEMU_EXITED', `QEMU exited while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new CellaError('QMP_ERROR', `no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.removeListener(name, onEvent);
        this.removeListener('close', onClose);
      };
      this.on(name, onEvent);
      this.once('close', onClose);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
