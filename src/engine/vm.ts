import { EventEmitter } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { AgentClient } from '../agent/index.js';
import { FrameDecoder, Msg } from '../agent/index.js';
import type { VmNetwork } from '../net/index.js';
import type { ExitInfo, QemuProcess, QmpClient } from '../vmm/index.js';

/** What identifies a VM across suspends and restarts; enough to resume or terminate it. */
export interface VmRef {
  id: string;
  /** The image snapshot it was launched from. */
  imageDir: string;
  /** Its network slot (namespace), kept while suspended. */
  slot: number;
}

export const vmFiles = (dir: string) => ({
  disk: path.join(dir, 'disk.qcow2'),
  checkpoint: path.join(dir, 'checkpoint'),
  console: path.join(dir, 'console.log'),
  appLog: path.join(dir, 'app.log'),
  /** QEMU's stderr, when it outlives cellad (EngineOptions.outliveParent). */
  qemuLog: path.join(dir, 'qemu.log'),
  qmp: path.join(dir, 'qmp.sock'),
  ctl: path.join(dir, 'ctl.sock'),
  log: path.join(dir, 'log.sock'),
  /** Where QEMU connects to save its state (cellad listens). */
  migrate: path.join(dir, 'migrate.sock'),
  /** Where a suspending QEMU writes its device state (made for its uid, removed once read). */
  devices: path.join(dir, 'devices.state'),
  /** Where QEMU listens to load its state: a folder its jailed uid may write to during the load only. */
  incoming: path.join(dir, 'incoming', 'migrate.sock'),
});

/**
 * Receives the app's stdout/stderr from the guest's log port and appends it
 * to a file, or to nothing when the file is null (the port is drained all the
 * same, so the guest never blocks); emits 'data' (stream, bytes) for live
 * followers either way.
 */
export class AppLog extends EventEmitter {
  private readonly decoder = new FrameDecoder();
  private out: WriteStream | undefined;

  private constructor(
    private readonly socket: net.Socket,
    file: string | null,
  ) {
    super();
    this.setFile(file);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      let frames;
      try {
        frames = this.decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (f.type !== Msg.LOG) continue;
        const data = Buffer.from(f.body);
        this.out?.write(data);
        this.emit('data', f.stream === 2 ? 'stderr' : 'stdout', data);
      }
    });
  }

  static connect(socketPath: string, file: string | null): Promise<AppLog> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(new AppLog(s, file));
      });
      s.once('error', reject);
    });
  }

  /** Where the output goes from now on (null: nowhere). */
  setFile(file: string | null): void {
    this.out?.end();
    this.out = file === null ? undefined : createWriteStream(file, { flags: 'a' });
    this.out?.on('error', () => {});
  }

  close(): Promise<void> {
    this.socket.destroy();
    const out = this.out;
    this.out = undefined;
    return new Promise((resolve) => (out ? out.end(resolve) : resolve()));
  }
}

/** QMP's BLOCK_IO_ERROR: `action` stop means QEMU paused the VM (werror=enospc: a full host disk). */
export interface BlockIoError {
  device?: string;
  operation?: 'read' | 'write';
  action?: 'ignore' | 'report' | 'stop';
  nospace?: boolean;
  reason?: string;
}

/** What a running VM asks of the engine's host state (host.ts), which alone knows whether an exit was asked for. */
export interface VmHost {
  /** False while the VM is running and nobody in cellad asked it to stop: an exit now is a crash. */
  exitExpected(): boolean;
  /** Marks the coming exit as requested (the VM's host state becomes 'stopping'). */
  beginStop(): void;
}

/**
 * A VM whose QEMU is running. Emits 'io-error' (BlockIoError) and 'exit' (ExitInfo & { expected: boolean })
 * when QEMU ends; `expected` is false when nobody in cellad asked for it.
 */
export class RunningVm extends EventEmitter {
  private readonly onExit = (info: ExitInfo): void => {
    this.agent.close();
    this.qmp.close();
    void this.appLog.close();
    this.emit('exit', { ...info, expected: this.host.exitExpected() });
  };

  constructor(
    readonly ref: VmRef,
    readonly dir: string,
    readonly network: VmNetwork,
    readonly qemu: QemuProcess,
    readonly qmp: QmpClient,
    readonly agent: AgentClient,
    readonly appLog: AppLog,
    private readonly host: VmHost,
    /** Milliseconds from QEMU spawn to each start-up step, for benchmarks. */
    readonly phases: Readonly<Record<string, number>> = {},
    /** Whether it came from the warm pool. */
    readonly pooled = false,
  ) {
    super();
    qemu.once('exit', this.onExit);
    // For an adopted QEMU this is the only sign that it may have ended.
    qmp.once('close', () => qemu.pollExit());
    // A write the host could not do (a full disk: QEMU stops the VM rather than fail the guest's write).
    qmp.on('BLOCK_IO_ERROR', (data: BlockIoError) => this.emit('io-error', data));
  }

  get id(): string {
    return this.ref.id;
  }

  /** QEMU's pid; with pidStartTime, what a restarted cellad needs to adopt it (Engine.adopt). */
  get pid(): number {
    return this.qemu.pid;
  }

  get pidStartTime(): string {
    return this.qemu.startTime;
  }

  /** QEMU's run state (QMP query-status): `running` is false when the VM is paused, e.g. adopted halfway through a launch or suspend. */
  queryStatus(): Promise<{ running: boolean; status: string }> {
    return this.qmp.execute<{ running: boolean; status: string }>('query-status');
  }

  /** Disconnects and stops supervising; QEMU runs on, and no 'exit' is reported. */
  release(): void {
    this.qemu.removeListener('exit', this.onExit);
    this.qemu.release();
    this.agent.close();
    this.qmp.close();
    void this.appLog.close();
  }

  /** Where the host dials to reach port `port` of the guest. */
  address(port: number): { host: string; port: number } {
    return { host: this.network.hostAddress, port };
  }

  /** Marks the coming exit as requested, so it is not reported as a crash. */
  beginStop(): void {
    this.host.beginStop();
  }
}
