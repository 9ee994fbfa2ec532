import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { accessSync, constants } from 'node:fs';
import { CellaError, setupMissing } from '../errors/index.js';

export const QEMU_BINARY = process.env.CELLA_QEMU ?? '/usr/bin/qemu-system-x86_64';

export interface ExitInfo {
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

/**
 * One supervised QEMU process. It runs inside the VM's network namespace and
 * gets SIGKILL if cellad dies (PR_SET_PDEATHSIG through setpriv), so no QEMU
 * outlives its parent. Node reaps it, so no zombies. Emits 'exit' (ExitInfo).
 */
export class QemuProcess extends EventEmitter {
  private stderrTail = '';
  private exitInfo: ExitInfo | undefined;
  private readonly exited: Promise<ExitInfo>;

  private constructor(private readonly child: ChildProcess) {
    super();
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-4096);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        // stderr may still hold the last words; give its pipe a tick to drain.
        setImmediate(() => {
          this.exitInfo = { code, signal, stderr: this.stderrTail.trim() };
          this.emit('exit', this.exitInfo);
          resolve(this.exitInfo);
        });
      });
    });
  }

  static spawn(args: string[], opts: { netns?: string; binary?: string } = {}): QemuProcess {
    const binary = opts.binary ?? QEMU_BINARY;
    requireExecutable(binary, 'QEMU (qemu-system-x86_64)');
    const argv = ['--pdeathsig', 'KILL', '--'];
    if (opts.netns) argv.push('nsenter', `--net=/run/netns/${opts.netns}`, '--');
    argv.push(binary, ...args);
    const child = spawn('setpriv', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.on('error', () => {});
    if (child.pid === undefined) throw new CellaError('QEMU_FAILED', 'could not start QEMU');
    return new QemuProcess(child);
  }

  get pid(): number {
    return this.child.pid as number;
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
    if (this.alive) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** Why it died, for error messages. */
  describeExit(): string {
    const e = this.exitInfo;
    if (!e) return 'QEMU is running';
    const how = e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
    return e.stderr ? `QEMU ${how}: ${e.stderr}` : `QEMU ${how}`;
  }
}
