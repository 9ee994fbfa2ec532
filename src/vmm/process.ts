import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { accessSync, closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { CellaError, setupMissing } from '../contract/index.js';
import type { Cgroup } from './cgroup.js';
import { processStartTime, startTimeOfChild } from './procfs.js';

export const QEMU_BINARY = process.env.CELLA_QEMU ?? '/usr/bin/qemu-system-x86_64';

export interface ExitInfo {
  /** Both null for an adopted QEMU: only its parent could learn them. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The tail of QEMU's stderr, which holds its reason for dying. */
  stderr: string;
}

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

export function requireExecutable(path: string, what: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw setupMissing(what, path);
  }
}

export interface SpawnOptions {
  /** cella-spawn (guest/host/spawn.c), the prelude that puts QEMU in place and becomes it. */
  spawner: string;
  netns?: string;
  binary?: string;
  /**
   * QEMU outlives this process (a cellad that restarts adopts it): no
   * PR_SET_PDEATHSIG, its own session, and stderr appended to `stderrFile`
   * rather than a pipe that would break when we die.
   */
  outliveParent?: { stderrFile: string };
  /** Joined before QEMU executes, so nothing of it runs outside; removed when it ends. */
  cgroup?: Cgroup;
}

/**
 * One supervised QEMU process, running inside the VM's network namespace.
 * By default it gets SIGKILL if cellad dies (PR_SET_PDEATHSIG until it drops
 * its uid, which clears it; a watcher after: cella-spawn --watch holds QEMU's
 * stdin pipe from cellad and kills QEMU at EOF), so no QEMU outlives its
 * parent, and Node reaps it. With `outliveParent` it runs on, and a later
 * cellad adopts it: not our child, so its end is found by polling /proc.
 * Emits 'exit' (ExitInfo).
 */
export class QemuProcess extends EventEmitter {
  private stderrTail = '';
  private exitInfo: ExitInfo | undefined;
  private readonly exited: Promise<ExitInfo>;
  private resolveExit: (info: ExitInfo) => void = () => {};
  private released = false;
  private poll: NodeJS.Timeout | undefined;

  private constructor(
    readonly pid: number,
    /** Field 22 of /proc/PID/stat: with the pid, it tells this QEMU from a later process that reuses the pid. */
    readonly startTime: string,
    /** Absent for an adopted QEMU. */
    private readonly child: ChildProcess | undefined,
    /** Read end of QEMU's stderr file, when it has one: it follows the VM folder when that is renamed. */
    private logFd: number | undefined,
    /** Its cgroup, removed once it ended; `rename` it with the VM folder. */
    readonly cgroup: Cgroup | undefined,
  ) {
    super();
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    child?.stderr?.setEncoding('utf8');
    child?.stderr?.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-TAIL_BYTES);
    });
    // stderr may still hold the last words; give its pipe a tick to drain.
    child?.once('exit', (code, signal) => setImmediate(() => this.finish(code, signal)));
  }

  static spawn(args: string[], opts: SpawnOptions): QemuProcess {
    const binary = path.resolve(opts.binary ?? QEMU_BINARY);
    requireExecutable(binary, 'QEMU (qemu-system-x86_64)');
    requireExecutable(opts.spawner, 'cella-spawn (the QEMU prelude)');
    const outlive = opts.outliveParent;
    // One static exec puts QEMU in place (ADR 0012); the order of its steps is the spawner's (guest/host/spawn.c).
    const prelude = outlive ? [] : ['--pdeathsig', '--watch'];
    for (const f of opts.cgroup?.procsFiles ?? []) prelude.push('--join', f);
    if (opts.netns) prelude.push('--netns', `/run/netns/${opts.netns}`);
    const argv = [...prelude, '--', binary, ...args];
    if (!outlive) {
      // stdin: the pipe the watcher reads; the kernel closes it when we die.
      const child = spawn(opts.spawner, argv, { stdio: ['pipe', 'ignore', 'pipe'], env: qemuEnv(process.env) });
      child.stdin?.on('error', () => {});
      return QemuProcess.started(child, undefined, opts.cgroup);
    }
    const stderr = openSync(outlive.stderrFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(opts.spawner, argv, { stdio: ['ignore', 'ignore', stderr], detached: true, env: qemuEnv(process.env) });
    } finally {
      closeSync(stderr);
    }
    // Its exit is still reported while we run, but it must not keep a stopping cellad alive.
    child.unref();
    return QemuProcess.started(child, outlive.stderrFile, opts.cgroup);
  }

  private static started(child: ChildProcess, stderrFile: string | undefined, cgroup: Cgroup | undefined): QemuProcess {
    child.on('error', () => {});
    if (child.pid === undefined) {
      void cgroup?.remove();
      throw new CellaError('QEMU_FAILED', 'could not start QEMU');
    }
    return new QemuProcess(child.pid, startTimeOfChild(child.pid), child, stderrFile === undefined ? undefined : openSync(stderrFile, 'r'), cgroup);
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

  private finish(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exitInfo || this.released) return;
    clearTimeout(this.poll);
    let stderr = this.stderrTail;
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
   * Does nothing for a child, whose exit Node reports.
   */
  pollExit(): void {
    if (this.child || this.poll || !this.alive || this.released) return;
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
    if (this.child) {
      // Someone waits for this exit now: keep Node up until it is reported.
      this.child.ref();
      this.child.kill('SIGKILL');
    } else {
      // Check the start time first: the pid may belong to someone else by now.
      if (processStartTime(this.pid) === this.startTime) {
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      this.pollExit();
    }
    return this.exited;
  }

  /**
   * Stops supervising without killing: QEMU runs on for a later cellad to
   * adopt, and this object reports no exit. Meant for `outliveParent` QEMUs;
   * one started with PR_SET_PDEATHSIG still dies with this process.
   */
  release(): void {
    this.released = true;
    clearTimeout(this.poll);
    this.child?.unref();
    this.child?.stderr?.destroy();
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
