import { EventEmitter } from 'node:events';
import { accessSync, closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { setupMissing } from '../contract/index.js';
import type { Cgroup } from './cgroup.js';
import { processStartTime } from './procfs.js';
import type { ServedChild, SpawnServer } from './spawn-server.js';

export const QEMU_BINARY = process.env.CELLA_QEMU ?? '/usr/bin/qemu-system-x86_64';

export interface ExitInfo {
  /** Both null for an adopted QEMU: only its parent could learn them. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The tail of QEMU's stderr, which holds its reason for dying. */
  stderr: string;
}

export function requireExecutable(path: string, what: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw setupMissing(what, path);
  }
}

export interface SpawnOptions {
  /** The spawn server (cella-spawn --serve, ADR 0012) whose child puts QEMU in place and becomes it. */
  spawner: SpawnServer;
  netns?: string;
  binary?: string;
  /**
   * QEMU outlives this process (a cellad that restarts adopts it): no
   * PR_SET_PDEATHSIG or watcher, its own session, and stderr appended to
   * `stderrFile`.
   */
  outliveParent?: { stderrFile: string };
  /** Joined before QEMU executes, so nothing of it runs outside; removed when it ends. */
  cgroup?: Cgroup;
}

/**
 * One supervised QEMU process, running inside the VM's network namespace.
 * The spawn server forks it, and reaps it and reports its exit while it runs.
 * By default it gets SIGKILL if the server dies (PR_SET_PDEATHSIG until it
 * drops its uid, which clears it), and its watcher kills it when cellad dies
 * (EOF on the lifeline it holds), so no QEMU outlives cellad. With
 * `outliveParent` it runs on, and a later cellad adopts it: not a child of
 * ours, so its end is found by polling /proc, as for one whose server died.
 * Emits 'exit' (ExitInfo).
 */
export class QemuProcess extends EventEmitter {
  private exitInfo: ExitInfo | undefined;
  private readonly exited: Promise<ExitInfo>;
  private resolveExit: (info: ExitInfo) => void = () => {};
  private released = false;
  private poll: NodeJS.Timeout | undefined;

  private constructor(
    readonly pid: number,
    /** Field 22 of /proc/PID/stat: with the pid, it tells this QEMU from a later process that reuses the pid. */
    readonly startTime: string,
    /** Its fork by the spawn server, which reports its exit; absent for an adopted QEMU, or once that server died. */
    private served: ServedChild | undefined,
    /** Read end of QEMU's stderr file, when it has one: it follows the VM folder when that is renamed. */
    private logFd: number | undefined,
    /** Its cgroup, removed once it ended; `rename` it with the VM folder. */
    readonly cgroup: Cgroup | undefined,
  ) {
    super();
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    void served?.end.then((exit) => {
      if (exit) {
        this.finish(exit.code, exit.signal, exit.stderr);
        return;
      }
      // The server died first: QEMU may run on (its watcher still holds cellad's lifeline), as an adopted one.
      this.served = undefined;
      this.pollExit();
    });
  }

  static async spawn(args: string[], opts: SpawnOptions): Promise<QemuProcess> {
    const binary = path.resolve(opts.binary ?? QEMU_BINARY);
    requireExecutable(binary, 'QEMU (qemu-system-x86_64)');
    const outlive = opts.outliveParent;
    // The server's child runs cella-spawn's prelude (ADR 0012); the order of its steps is the spawner's (guest/host/spawn.c).
    const prelude = outlive ? ['--setsid', '--stderr', path.resolve(outlive.stderrFile)] : ['--pdeathsig', '--watch'];
    for (const f of opts.cgroup?.procsFiles ?? []) prelude.push('--join', f);
    if (opts.netns) prelude.push('--netns', `/run/netns/${opts.netns}`);
    let served: ServedChild;
    try {
      // An outliving QEMU must not keep a stopping cellad up; its exit is still reported while we run.
      served = await opts.spawner.spawn([...prelude, '--', binary, ...args], !outlive);
    } catch (err) {
      void opts.cgroup?.remove();
      throw err;
    }
    return new QemuProcess(served.pid, served.startTime, served, outlive ? openSync(outlive.stderrFile, 'r') : undefined, opts.cgroup);
  }

  /**
   * Takes over a QEMU started by an earlier cellad (with `outliveParent`),
   * if process `pid` with that start time still runs; its stderr went to
   * `stderrFile`, and `cgroup` is the one it runs in.
   */
  static adopt(pid: number, startTime: string, stderrFile: string, cgroup?: Cgroup): QemuProcess | undefined {
    if (processStartTime(pid) !== startTime) return undefined;
    let fd: number | undefined;
    try {
      fd = openSync(stderrFile, 'r');
    } catch {
      fd = undefined;
    }
    return new QemuProcess(pid, startTime, undefined, fd, cgroup);
  }

  private finish(code: number | null, signal: NodeJS.Signals | null, tail = ''): void {
    if (this.exitInfo || this.released) return;
    clearTimeout(this.poll);
    let stderr = tail;
    if (this.logFd !== undefined) {
      stderr = readTail(this.logFd);
      closeSync(this.logFd);
      this.logFd = undefined;
    }
    const info = { code, signal, stderr: stderr.trim() };
    this.exitInfo = info;
    const report = (): void => {
      this.emit('exit', info);
      this.resolveExit(info);
    };
    // Reported once its cgroup is gone, so a QEMU started next for the same VM never finds it half-removed.
    if (this.cgroup) void this.cgroup.remove().then(report);
    else report();
  }

  /**
   * An adopted QEMU is not our child, so nothing tells us it ended: once there
   * is reason to think so (its QMP connection closed, or we killed it), poll
   * /proc until it is gone, then report the exit (code and signal unknown).
   * Does nothing for a child of a live spawn server, which reports its exit.
   */
  pollExit(): void {
    if (this.served || this.poll || !this.alive || this.released) return;
    const check = (delay: number): void => {
      if (processStartTime(this.pid) !== this.startTime) {
        this.finish(null, null);
        return;
      }
      this.poll = setTimeout(() => check(Math.min(delay * 2, 1000)), delay);
    };
    check(5);
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  get exit(): ExitInfo | undefined {
    return this.exitInfo;
  }

  waitExit(): Promise<ExitInfo> {
    return this.exited;
  }

  async kill(): Promise<ExitInfo> {
    if (!this.alive) return this.exited;
    // Someone waits for this exit now: keep Node up until it is reported.
    this.served?.hold(true);
    // Check the start time first: the pid may belong to someone else by now (the server reaped it).
    if (processStartTime(this.pid) === this.startTime) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.pollExit();
    return this.exited;
  }

  /**
   * Stops supervising without killing: QEMU runs on for a later cellad to
   * adopt, and this object reports no exit. Meant for `outliveParent` QEMUs;
   * one started with a watcher still dies with this process.
   */
  release(): void {
    this.released = true;
    clearTimeout(this.poll);
    this.served?.hold(false);
    if (this.logFd !== undefined) closeSync(this.logFd);
    this.logFd = undefined;
  }

  /** Why it died, for error messages. */
  describeExit(): string {
    const e = this.exitInfo;
    if (!e) return 'QEMU is running';
    const how = e.signal ? `killed by ${e.signal}` : e.code === null ? 'ended' : `exited with code ${e.code}`;
    return e.stderr ? `QEMU ${how}: ${e.stderr}` : `QEMU ${how}`;
  }
}

const TAIL_BYTES = 4096;

function readTail(fd: number): string {
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, TAIL_BYTES));
    readSync(fd, buf, 0, buf.length, size - buf.length);
    return buf.toString('utf8');
  } catch {
    return '';
  }
}
