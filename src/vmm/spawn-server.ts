/**
 * The spawn server (ADR 0012, guest/host/serve.c): one long-lived
 * `cella-spawn --serve`, started while cellad is small, that forks each QEMU's
 * prelude for it. A Node spawn forks cellad itself (copying the page tables of
 * hundreds of MiB, 10–25 ms of CPU here) and blocks the event loop until the
 * child has exec'd; the server's fork costs next to nothing. Requests and
 * replies are frames on its stdin and stdout (serve.c says which); its
 * descriptor 3 is a lifeline that its QEMUs' watchers hold, so they still die
 * exactly when cellad does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { Socket } from 'node:net';
import { CellaError, setupMissing } from '../contract/index.js';

/**
 * glibc's malloc asks for transparent huge pages for its heap (glibc 2.35+;
 * an older glibc ignores the tunable). A QEMU start zero-fills about 4 MiB of
 * heap page by page: 1300 of its 4200 page faults, and faults are its
 * costliest step here (about 20 ms of its 96 ms of CPU to a QMP greeting,
 * under TCG on this host). It costs about 2 MiB more PSS per VM.
 */
export const QEMU_GLIBC_TUNABLES = 'glibc.malloc.hugetlb=1';

/** The environment QEMU runs with: `base`, with QEMU_GLIBC_TUNABLES added to any tunables it sets. */
export function qemuEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const own = base.GLIBC_TUNABLES;
  return { ...base, GLIBC_TUNABLES: own ? `${own}:${QEMU_GLIBC_TUNABLES}` : QEMU_GLIBC_TUNABLES };
}

/** How a child of the server ended; `stderr` is the tail the server kept (empty when its stderr went to a file). */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** A process the server forked for us. */
export class ServedChild {
  /** Its exit as the server reaped it, or undefined if the server died first (the child may run on). */
  readonly end: Promise<ChildExit | undefined>;
  settle: (exit: ChildExit | undefined) => void = () => {};

  constructor(
    readonly pid: number,
    /** Field 22 of /proc/PID/stat, read by the server before it could reap the child. */
    readonly startTime: string,
    private readonly server: ServerProcess,
  ) {
    this.end = new Promise((resolve) => (this.settle = resolve));
  }

  /** Whether this child keeps Node's event loop alive (it does while someone waits for its exit). */
  hold(on: boolean): void {
    this.server.hold(this, on);
  }
}

/** cella-spawn's status for a command line it refuses (guest/host/spawn.h). */
const SPAWN_FAILED = 125;
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));
const TAIL_BYTES = 4096;

/** One run of `cella-spawn --serve`. */
class ServerProcess {
  private readonly proc: ChildProcess;
  private readonly pending = new Map<number, { resolve: (c: ServedChild) => void; reject: (e: Error) => void; holds: boolean }>();
  private readonly children = new Map<number, ServedChild>();
  private readonly holding = new Set<ServedChild>();
  private nextId = 1;
  private input: Buffer = Buffer.alloc(0);
  private stderrTail = '';
  dead = false;

  constructor(
    private readonly binary: string,
    env: NodeJS.ProcessEnv,
  ) {
    this.proc = spawn(binary, ['--serve'], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'], env });
    this.proc.on('error', () => {});
    this.proc.stdin?.on('error', () => {});
    this.proc.stdout?.on('data', (chunk: Buffer) => this.read(chunk));
    this.proc.stderr?.setEncoding('utf8');
    this.proc.stderr?.on('data', (s: string) => (this.stderrTail = (this.stderrTail + s).slice(-TAIL_BYTES)));
    // Dead once it exited and its replies are all read (Node may report the exit before the last of them).
    let how: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let drained = false;
    this.proc.once('exit', (code, signal) => {
      how = { code, signal };
      if (drained) this.died(how);
    });
    this.proc.stdout?.once('close', () => {
      drained = true;
      if (how) this.died(how);
    });
    for (const s of [this.proc.stdin, this.proc.stderr, this.proc.stdio[3]]) (s as Socket | null)?.unref();
    this.refresh();
  }

  request(args: string[], holds: boolean): Promise<ServedChild> {
    if (this.dead) return Promise.reject(serverGone('died'));
    const id = this.nextId++;
    const payload = Buffer.from(['spawn', String(id), ...args].map((f) => `${f}\0`).join(''));
    const header = Buffer.alloc(4);
    header.writeUInt32LE(payload.length);
    this.proc.stdin?.write(Buffer.concat([header, payload]));
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, holds });
      this.refresh();
    });
  }

  get pid(): number | undefined {
    return this.dead ? undefined : this.proc.pid;
  }

  hold(child: ServedChild, on: boolean): void {
    if (on && !this.dead && this.children.has(child.pid)) this.holding.add(child);
    else this.holding.delete(child);
    this.refresh();
  }

  /** Requests and replies end: the server exits, and QEMUs still watched through the lifeline die. */
  close(): void {
    this.proc.stdin?.end();
    this.proc.stdio[3]?.destroy();
  }

  /** Node waits for the server only while a spawn or a child's exit is awaited. */
  private refresh(): void {
    const on = !this.dead && (this.pending.size > 0 || this.holding.size > 0);
    const out = this.proc.stdout as Socket | null;
    if (on) {
      this.proc.ref();
      out?.ref();
    } else {
      this.proc.unref();
      out?.unref();
    }
  }

  private read(chunk: Buffer): void {
    this.input = this.input.length ? Buffer.concat([this.input, chunk]) : chunk;
    while (this.input.length >= 4) {
      const len = this.input.readUInt32LE(0);
      if (this.input.length < 4 + len) break;
      this.reply(this.input.subarray(4, 4 + len));
      this.input = this.input.subarray(4 + len);
    }
  }

  private reply(frame: Buffer): void {
    const { list, rest } = fields(frame, 4);
    const [kind, a = '', b = '', c = ''] = list;
    if (kind === 'exit') {
      const child = this.children.get(Number(a));
      if (!child) return;
      this.children.delete(child.pid);
      this.holding.delete(child);
      this.refresh();
      child.settle({
        code: b === '' ? null : Number(b),
        signal: c === '' ? null : (SIGNAL_NAMES.get(Number(c)) ?? null),
        stderr: frame.subarray(rest).toString('utf8'),
      });
      return;
    }
    const p = this.pending.get(Number(a));
    if (!p) return;
    this.pending.delete(Number(a));
    if (kind === 'ok') {
      const child = new ServedChild(Number(b), c, this);
      this.children.set(child.pid, child);
      child.hold(p.holds);
      p.resolve(child);
    } else {
      p.reject(new CellaError('QEMU_FAILED', `could not start QEMU: ${b || 'the spawn server refused the request'}`));
    }
    this.refresh();
  }

  private died({ code, signal }: { code: number | null; signal: NodeJS.Signals | null }): void {
    this.dead = true;
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const why = this.stderrTail.trim() ? `${how}: ${this.stderrTail.trim()}` : how;
    // 125: a cella-spawn from before the server refuses --serve as an unknown option.
    const err = code === SPAWN_FAILED ? setupMissing('cella-spawn with --serve (the QEMU spawn server)', this.binary) : serverGone(why);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const child of this.children.values()) child.settle(undefined);
    this.children.clear();
    this.holding.clear();
    this.refresh();
  }
}

/** The first `n` NUL-ended fields of a frame (fewer if it has fewer), and where the rest begins. */
function fields(frame: Buffer, n: number): { list: string[]; rest: number } {
  const list: string[] = [];
  let at = 0;
  while (list.length < n) {
    const end = frame.indexOf(0, at);
    if (end < 0) break;
    list.push(frame.toString('utf8', at, end));
    at = end + 1;
  }
  return { list, rest: at };
}

function serverGone(why: string): CellaError {
  return new CellaError('QEMU_FAILED', `could not start QEMU: the spawn server (cella-spawn --serve) ${why}`);
}

/**
 * The spawn server of one Engine: started at once, and again for the next
 * spawn if it died (its QEMUs are then watched as adopted ones: QemuProcess).
 */
export class SpawnServer {
  private current: ServerProcess;
  private closed = false;

  constructor(
    /** The cella-spawn binary. */
    readonly binary: string,
    /** Every QEMU's environment: the server's, which its children inherit. */
    private readonly env: NodeJS.ProcessEnv = qemuEnv(process.env),
  ) {
    this.current = new ServerProcess(binary, env);
  }

  /**
   * Forks a child that runs cella-spawn's prelude with `args` (its command
   * line, plus --setsid and --stderr FILE). `holds`: Node stays up until its exit is reported.
   */
  spawn(args: string[], holds: boolean): Promise<ServedChild> {
    if (this.closed) return Promise.reject(serverGone('was closed'));
    if (this.current.dead) this.current = new ServerProcess(this.binary, this.env);
    return this.current.request(args, holds);
  }

  close(): void {
    this.closed = true;
    this.current.close();
  }

  /** The server process running now, if any. */
  get pid(): number | undefined {
    return this.current.pid;
  }
}
