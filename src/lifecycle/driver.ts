/**
 * What the lifecycle needs of the engine and of a running VM, and nothing
 * more: the engine (src/engine's `Engine` and `RunningVm`) is one such
 * driver; tests stand in a fake that boots nothing
 * (test/fixtures/fake-driver.ts).
 */
import type { AppLogOption, BlockIoError, StartOptions, VmRef } from '../engine/index.js';
import type { LogSource } from '../logs/index.js';
import type { NetworkPolicy } from '../net/index.js';

/** A VM whose QEMU runs (or is paused): what the lifecycle calls on it. */
export interface DriverVm {
  readonly ref: VmRef;
  /** With pidStartTime, what a restarted cellad adopts the VM's QEMU by. */
  readonly pid: number;
  readonly pidStartTime: string;
  readonly appLog: LogSource;
  /** The guest's agent: its signals (`activity`, `suspend-request`), and what a guest restored from a pause needs. */
  readonly agent: {
    on(event: 'activity' | 'suspend-request', listener: () => void): unknown;
    setClock(): Promise<void>;
    reseed(): Promise<void>;
  };
  readonly qmp: { execute(command: 'cont'): Promise<unknown> };
  readonly qemu: { kill(): Promise<unknown> };
  /** Where the host dials to reach `port` of the guest (its hooks). */
  address(port: number): { host: string; port: number };
  /** Marks the coming exit as requested, so it is not reported as a crash. */
  beginStop(): void;
  queryStatus(): Promise<{ running: boolean }>;
}

export interface VmExit {
  /** False when nobody in cellad asked the VM to stop: a crash. */
  expected: boolean;
  stderr?: string;
  code?: number | null;
  signal?: string | null;
}

/**
 * The engine as the lifecycle drives it. A driver is handed back only the
 * VMs it returned (suspend takes one of its own).
 */
export interface VmDriver {
  /** Launches VM `id` from the snapshot in `image`; `onSpawn` learns its pid before anything is loaded. */
  launch(image: string, id: string, opts: StartOptions & { network?: NetworkPolicy }): Promise<DriverVm>;
  /** Brings a suspended VM back from its checkpoint (or its parked QEMU). */
  resume(ref: VmRef, opts: StartOptions): Promise<DriverVm>;
  /** Writes the VM's checkpoint and ends its QEMU. */
  suspend(vm: DriverVm): Promise<{ bytes: number }>;
  /** Ends a VM, running or suspended, and removes everything it had. */
  terminate(ref: VmRef): Promise<void>;
  /** The QEMU an earlier cellad left running, if process `pid` started at `startTime` still runs from this VM's folder. */
  adopt(ref: VmRef, pid: number, startTime: string, opts: AppLogOption): Promise<DriverVm | undefined>;
  /** The VM if it runs here. */
  get(id: string): DriverVm | undefined;
  /** The VM's folder (its checkpoint file is there). */
  vmDir(id: string): string;
  /** Continues a VM QEMU stopped (a full disk); false if it does not run here or refused. */
  cont(id: string): Promise<boolean>;
  /** Makes a suspended VM's namespace again if it is gone, with `policy`; true when it was made. */
  ensureNetwork(ref: VmRef, policy: NetworkPolicy | undefined): Promise<boolean>;
  on(event: 'vm-exit', listener: (id: string, info: VmExit) => void): unknown;
  on(event: 'vm-io-error', listener: (id: string, data: BlockIoError) => void): unknown;
  removeListener(event: 'vm-exit', listener: (id: string, info: VmExit) => void): unknown;
  removeListener(event: 'vm-io-error', listener: (id: string, data: BlockIoError) => void): unknown;
}
