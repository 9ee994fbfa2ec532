/**
 * The client of cella-netd (guest/host/netd.c, ADR 0013): one long-lived root
 * helper that makes, configures and removes the VMs' namespaces, so a launch
 * starts no `ip`/`nft` process. Requests are written as they come and answered
 * in order (the protocol is in guest/host/netd.h). The helper starts at the
 * first request; if it dies, the requests in flight fail and the next one
 * starts it again. One helper serves every engine of this process.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { CellaError } from '../contract/index.js';
import { netnsName } from './rules.js';

interface Pending {
  slot: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** The step cella-netd names when add found the namespace's name taken (and changed nothing). */
export const SLOT_TAKEN = 'slot-taken';

/** The helper's failure for `slot`: "step: reason" from cella-netd, as NETWORK_SETUP_FAILED. */
function failure(slot: number, message: string): CellaError {
  const step = /^([a-z0-9_-]+): /.exec(message)?.[1];
  return new CellaError('NETWORK_SETUP_FAILED', `${netnsName(slot)}: ${message.trim()}`, { details: { step: step ?? 'netd' } });
}

export class Netd {
  private child: ChildProcessByStdio<Writable, Readable, Readable> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private input = Buffer.alloc(0);
  private stderr = '';

  constructor(private readonly binary: string) {}

  /** Makes the bare namespace of `slot`; fails with step SLOT_TAKEN, changing nothing, if its name exists. */
  add(slot: number): Promise<void> {
    return this.request('add', slot, '');
  }

  /** Puts the veth pair, tap and base `rules` in the namespace of `slot` (a failure removes it); `tag` (may be empty) goes on the host end. */
  setup(slot: number, tag: string, rules: string): Promise<void> {
    return this.request('setup', slot, `${tag}\n${rules}`);
  }

  /** Applies `rules` in the namespace of `slot` as one transaction. */
  nft(slot: number, rules: string): Promise<void> {
    return this.request('nft', slot, rules);
  }

  /** Removes the namespace of `slot`, and with it its links. */
  destroy(slot: number): Promise<void> {
    return this.request('destroy', slot, '');
  }

  private request(op: string, slot: number, payload: string): Promise<void> {
    const child = this.child ?? this.start();
    const id = this.nextId++;
    const body = Buffer.from(payload);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { slot, resolve, reject });
      this.refWhileBusy();
      child.stdin.write(Buffer.concat([Buffer.from(`${id} ${op} ${slot} ${body.length}\n`), body]));
    });
  }

  private start(): ChildProcessByStdio<Writable, Readable, Readable> {
    const child = spawn(this.binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.input = Buffer.alloc(0);
    this.stderr = '';
    child.stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    child.stderr.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-2000)));
    // A write after the helper died fails here; 'close' below fails the requests.
    child.stdin.on('error', () => {});
    child.on('error', (err) => this.died(child, err.message));
    child.on('close', (code, signal) => this.died(child, `exited (${signal ?? `code ${code}`})`));
    return child;
  }

  private onData(chunk: Buffer): void {
    this.input = Buffer.concat([this.input, chunk]);
    for (;;) {
      const nl = this.input.indexOf(0x0a);
      if (nl < 0) return;
      const m = /^(\d+) (ok|err) (\d+)$/.exec(this.input.subarray(0, nl).toString());
      if (!m) {
        this.child?.kill('SIGKILL');
        return;
      }
      const end = nl + 1 + Number(m[3]);
      if (this.input.length < end) return;
      const message = this.input.subarray(nl + 1, end).toString();
      this.input = this.input.subarray(end);
      const id = Number(m[1]);
      const req = this.pending.get(id);
      // Id 0: the helper could not frame a request; it exits, and 'close' fails the rest.
      if (!req) continue;
      this.pending.delete(id);
      if (m[2] === 'ok') req.resolve();
      else req.reject(failure(req.slot, message));
      this.refWhileBusy();
    }
  }

  private died(child: ChildProcessByStdio<Writable, Readable, Readable>, how: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    const detail = this.stderr.trim();
    for (const [id, req] of this.pending) {
      this.pending.delete(id);
      req.reject(
        new CellaError(
          'NETWORK_SETUP_FAILED',
          `${netnsName(req.slot)}: the network helper ${this.binary} ${how}${detail ? `: ${detail}` : ''}; the request is lost`,
          {
            details: { step: 'netd' },
          },
        ),
      );
    }
  }

  /** The helper keeps this process alive only while it owes an answer. */
  private refWhileBusy(busy = this.pending.size > 0): void {
    const child = this.child;
    if (!child) return;
    for (const handle of [child, child.stdout, child.stderr, child.stdin] as { ref(): void; unref(): void }[]) {
      if (busy) handle.ref();
      else handle.unref();
    }
  }

  /** Closes the helper's stdin (it exits at EOF) once the requests in flight are answered. */
  async close(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.refWhileBusy(true);
    await new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      child.stdin.end();
    });
  }
}

let shared: { netd: Netd; users: number } | undefined;

/**
 * Takes a share of this process's cella-netd at `binary` (the first one asked
 * for serves all: they are the same program). Returns the release; the last
 * release closes the helper.
 */
export function useNetworkHelper(binary: string): () => Promise<void> {
  shared ??= { netd: new Netd(binary), users: 0 };
  const mine = shared;
  mine.users++;
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    if (--mine.users > 0) return;
    if (shared === mine) shared = undefined;
    await mine.netd.close();
  };
}

/** The helper of this process; an engine (its NetworkPool) must be open. */
export function networkHelper(): Netd {
  if (!shared) throw new CellaError('NETWORK_SETUP_FAILED', 'no network helper: the engine is not open');
  return shared.netd;
}
