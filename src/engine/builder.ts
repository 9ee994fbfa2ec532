/**
 * A builder VM: boots a root disk, runs build steps through cella-init, and
 * freezes the disk after each step into a layer file (a qcow2 whose backing
 * is the previous layer), so a later build can start from any finished step.
 * It has no network device at all, and the build context arrives on a second,
 * read-only disk that cella-init mounts at /run/cella/build.
 */
import { rmSync } from 'node:fs';
import type { AgentClient, ExecOptions, ExecResult, ProcessSpec } from '../agent/index.js';
import { CellaError } from '../errors/index.js';
import type { QemuProcess, QmpClient } from '../vmm/index.js';

/** Where the guest sees the build disk (cella-init's BUILD_DIR). */
export const BUILD_MOUNT = '/run/cella/build';

export interface BuilderSpec {
  /** qcow2 the builder writes to; its backing chain is the starting point. */
  top: string;
  /** Raw ext4 with the build context; mounted read-only. */
  buildDisk: string;
  memoryMiB?: number;
  vcpus?: number;
  /** Guest console, for a boot that fails. */
  consoleLog: string;
  bootTimeoutMs?: number;
}

export class BuilderVm {
  private top: string;

  constructor(
    spec: BuilderSpec,
    private readonly qemu: QemuProcess,
    private readonly qmp: QmpClient,
    private readonly agent: AgentClient,
    private readonly work: string,
  ) {
    this.top = spec.top;
  }

  /** The file the running guest writes to. */
  get currentTop(): string {
    return this.top;
  }

  exec(spec: ProcessSpec, options: ExecOptions = {}): Promise<ExecResult> {
    if (!this.qemu.alive) throw new CellaError('QEMU_EXITED', `the builder VM is gone: ${this.qemu.describeExit()}`);
    return this.agent.exec(spec, options);
  }

  /**
   * Freezes what the guest wrote so far in the current top and continues on
   * `next`, a new qcow2 backed by it. The guest's caches are flushed first, so
   * the frozen file is a consistent file system.
   */
  async commit(next: string): Promise<void> {
    await this.agent.sync();
    await this.qmp.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': next, format: 'qcow2', mode: 'absolute-paths' });
    this.top = next;
  }

  /** Flushes and stops the VM; the current top is complete afterwards. */
  async close(): Promise<void> {
    try {
      if (this.qemu.alive) {
        await this.agent.sync().catch(() => {});
        await this.qmp.execute('quit').catch(() => {});
      }
    } finally {
      this.agent.close();
      this.qmp.close();
      await this.qemu.kill();
      rmSync(this.work, { recursive: true, force: true });
    }
  }
}
