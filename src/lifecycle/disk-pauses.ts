/**
 * VMs QEMU stopped on a write their host could not do (werror=enospc): the
 * guest sees nothing and keeps its data; the VM stays RUNNING, paused, with a
 * reason, and is continued when space returns. Errors QEMU reported to the
 * guest (`action: report`) are the guest's own.
 */
import type { BlockIoError } from '../engine/index.js';
import type { Store } from '../store/index.js';
import type { VmDriver } from './driver.js';

export class DiskPauses {
  /** RUNNING VMs paused by a full disk, each with the write of its reason. */
  private readonly paused = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly driver: VmDriver,
    private readonly isLow: () => boolean,
    private readonly log: (line: string) => void,
  ) {}

  /** The driver's `vm-io-error` listener. */
  readonly onIoError = (id: string, data: BlockIoError): void => {
    if (data.action !== 'stop' || this.paused.has(id)) return;
    // Marked at once: a second report while the reason is being written is the same pause.
    const recorded = this.record(id, data).catch((err: Error) => this.log(`MicroVM ${id}: its pause could not be recorded: ${err.message}`));
    this.paused.set(id, recorded);
  };

  has(id: string): boolean {
    return this.paused.has(id);
  }

  /** The VM left RUNNING: whatever paused it is over. */
  forget(id: string): void {
    this.paused.delete(id);
  }

  private async record(id: string, data: BlockIoError): Promise<void> {
    const rec = await this.store.getVm(id);
    if (!rec || rec.state !== 'RUNNING') return void this.paused.delete(id);
    const why = data.nospace ? "the host's disk is full" : `a write to its disk failed on the host (${data.reason ?? 'I/O error'})`;
    const reason = `paused: ${why}; it continues by itself once there is space again`;
    this.log(`MicroVM ${id}: ${reason}`);
    await this.store.patchVm(id, rec.generation, { stateReason: reason });
  }

  /** Continues the VMs a full disk paused, if the disk has room again; those it pauses again wait for the next call. */
  async continueAll(): Promise<void> {
    if (this.isLow()) return;
    for (const [id, recorded] of [...this.paused]) {
      // The pause's reason is written before it is cleared, never after.
      await recorded;
      if (this.paused.get(id) !== recorded) continue;
      this.paused.delete(id);
      const rec = await this.store.getVm(id);
      if (rec?.state !== 'RUNNING') continue;
      if (await this.driver.cont(id)) {
        this.log(`MicroVM ${id}: continued, the disk has room again`);
        await this.store.patchVm(id, rec.generation, { stateReason: null });
      } else {
        this.paused.set(id, Promise.resolve());
      }
    }
  }
}
