/**
 * What every lifecycle operation reads of a VM and wires onto its QEMU: its
 * record and image (or NOT_FOUND), the engine's handle, the pid recorded at
 * spawn, its app log and guest signals, and its runtime hooks. Nothing here
 * writes state: a guest's suspend request is handed back to the lifecycle.
 */
import { CellaError, hookPort, type RuntimeHook } from '../contract/index.js';
import type { VmRef } from '../engine/index.js';
import type { LogHub } from '../logs/index.js';
import type { Store, VmRecord } from '../store/index.js';
import type { DriverVm } from './driver.js';
import { callHook, hookTimeoutMs } from './hooks.js';
import type { RunnableImage } from './pending.js';

export interface VmAccessOptions {
  store: Store;
  logs: LogHub;
  images: (name: string, version: string) => Promise<RunnableImage | undefined>;
  log: (line: string) => void;
  /** The guest says it is busy. */
  onActivity: (id: string) => void;
  /** The guest asks to be suspended. */
  onSuspendRequest: (id: string) => void;
}

export class VmAccess {
  /** Agents whose guest signals are already wired (a VM resumed in place keeps its agent). */
  private readonly signalled = new WeakSet<object>();

  constructor(private readonly opts: VmAccessOptions) {}

  async require(id: string): Promise<VmRecord> {
    const rec = await this.opts.store.getVm(id);
    if (!rec) throw new CellaError('NOT_FOUND', `MicroVM ${id} not found`, { details: { resourceId: id, resourceType: 'Microvm' } });
    return rec;
  }

  async imageOf(rec: VmRecord): Promise<RunnableImage> {
    const image = await this.opts.images(rec.imageName, rec.imageVersion);
    if (!image) throw new CellaError('NOT_FOUND', `image ${rec.imageName} of MicroVM ${rec.id} no longer exists`);
    return image;
  }

  /** The engine's handle of a VM; its image folder is empty when the image is gone (enough to terminate it, not to resume it). */
  async ref(rec: VmRecord): Promise<VmRef> {
    return { id: rec.id, imageDir: (await this.opts.images(rec.imageName, rec.imageVersion))?.dir ?? '', slot: rec.slot ?? -1 };
  }

  /**
   * Records a VM's new QEMU in the store the moment it exists, before it is
   * loaded: a cellad that dies halfway through a launch or resume leaves a
   * QEMU the next start finds by this pid, and adopts or kills (ADR 0007).
   */
  recordPid(rec: VmRecord): (pid: number, startTime: string) => void {
    return (pid, pidStartTime) =>
      void this.opts.store
        .patchVm(rec.id, rec.generation, { pid, pidStartTime })
        .catch((err: Error) => this.opts.log(`MicroVM ${rec.id}: its pid could not be recorded: ${err.message}`));
  }

  attach(rec: VmRecord, vm: DriverVm): void {
    if (!rec.spec.loggingDisabled) this.opts.logs.attach(rec.id, vm.appLog);
    // Beyond AWS: the guest may say it is busy, or ask to be suspended (docs/design.md, "Guest → host signals").
    if (this.signalled.has(vm.agent)) return;
    this.signalled.add(vm.agent);
    vm.agent.on('activity', () => this.opts.onActivity(rec.id));
    vm.agent.on('suspend-request', () => this.opts.onSuspendRequest(rec.id));
  }

  /** Calls a runtime hook in the VM: undefined on success, else why it failed. */
  hook(vm: DriverVm, image: RunnableImage, hook: RuntimeHook, body?: unknown): Promise<string | undefined> {
    const port = hookPort(image.config.hooks) ?? image.config.port;
    return callHook(vm.address(port), hook, hookTimeoutMs(image.config, hook), body);
  }
}

/** INVALID_STATE: the VM's state does not allow what was asked. */
export function conflict(rec: VmRecord, verb: string): CellaError {
  return new CellaError('INVALID_STATE', `MicroVM ${rec.id} is ${rec.state} and cannot be ${verb}`, {
    details: { resourceId: rec.id, resourceType: 'Microvm' },
  });
}
