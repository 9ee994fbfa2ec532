/**
 * The engine's host state: one entry per folder of `vms/` this process holds
 * (a VM id, `.warm-*`, `.template-*`, `.builder-*`), with its state, its QEMU
 * once spawned, and what that state needs. `write` is the only function that
 * changes a state, and refuses any move the table below does not list.
 *
 *   restoring ──► warm                      (a warm clone, paused in its pool)
 *   restoring ──► standby ──► restoring     (a suspended VM's empty QEMU, taken by its resume)
 *   restoring ──► running ◄──► stopping ──► parked ──► restoring (a resume in place)
 *   adopting  ──► running
 *   template, builder: no move
 *
 * Every entry is made in one of the states of an operation in flight, which
 * owns it: the operation moves it on, or removes it when it fails or is done.
 * The other states are supervised: their entry goes when their QEMU ends
 * (`exited`, which checks it is the same QEMU, so a late exit never removes a
 * later incarnation), or when the engine discards or lets the VM go.
 */
import { CellaError } from '../contract/index.js';
import type { VmHost } from './vm.js';

export type HostState = 'template' | 'builder' | 'restoring' | 'adopting' | 'warm' | 'standby' | 'running' | 'stopping' | 'parked';

/** Capturing an image, running a build, restoring a clone or a checkpoint (or continuing a parked QEMU), adopting a QEMU. */
export type InFlightState = 'template' | 'builder' | 'restoring' | 'adopting';

export const HOST_TRANSITIONS: Readonly<Record<HostState, readonly HostState[]>> = {
  template: [],
  builder: [],
  restoring: ['warm', 'standby', 'running'],
  adopting: ['running'],
  // A launch takes a warm clone's QEMU into its own 'restoring' entry; the warm entry ends.
  warm: [],
  // Its VM's resume takes it, loads the checkpoint into it and runs it.
  standby: ['restoring'],
  // A suspend, a terminate, or the lifecycle's beginStop: the coming exit is one the engine asked for.
  running: ['stopping'],
  // Back to running when a suspend fails and the VM runs on; parked when it kept the QEMU for the resume window.
  stopping: ['running', 'parked'],
  parked: ['restoring'],
};

const IN_FLIGHT: ReadonlySet<HostState> = new Set<InFlightState>(['template', 'builder', 'restoring', 'adopting']);

function inFlight<Q, V, W>(e: HostVm<Q, V, W> | undefined): e is Extract<HostVm<Q, V, W>, { state: InFlightState }> {
  return e !== undefined && IN_FLIGHT.has(e.state);
}

/** Whether an entry may go from `from` to `to` (undefined: no entry). Every entry may end; only in-flight states begin one. */
export function canMove(from: HostState | undefined, to: HostState | undefined): boolean {
  if (from === undefined) return to !== undefined && IN_FLIGHT.has(to);
  if (to === undefined) return true;
  return HOST_TRANSITIONS[from].includes(to);
}

/** One entry: `Q` is its QEMU, `V` a running VM, `W` a warm clone (the engine's QemuProcess, RunningVm, WarmVm). */
export type HostVm<Q, V, W> =
  | { state: InFlightState; qemu?: Q }
  | { state: 'warm'; qemu: Q; imageDir: string; warm: W }
  /** A suspended VM's QEMU, spawned empty and waiting for its checkpoint (standby.ts). */
  | { state: 'standby'; qemu: Q; standby: W; preloadedBytes: number }
  | { state: 'running' | 'stopping'; qemu: Q; vm: V }
  /** A suspended VM whose stopped QEMU is kept for the resume window; the timer ends it. */
  | { state: 'parked'; qemu: Q; vm: V; timer: NodeJS.Timeout };

export class HostTable<Q extends { readonly pid: number }, V, W> {
  private readonly entries = new Map<string, HostVm<Q, V, W>>();

  entry(name: string): HostVm<Q, V, W> | undefined {
    return this.entries.get(name);
  }

  /**
   * The only writer of state: sets folder `name`'s entry to `next`, or removes
   * it (undefined), if the table allows the move. Leaving `parked` stops its timer.
   */
  write(name: string, next: HostVm<Q, V, W> | undefined): void {
    const cur = this.entries.get(name);
    if (!canMove(cur?.state, next?.state)) {
      throw new CellaError('INVALID_STATE', `VM folder ${name} cannot go from ${cur?.state ?? 'nothing'} to ${next?.state ?? 'nothing'}`);
    }
    if (cur?.state === 'parked') clearTimeout(cur.timer);
    if (next) this.entries.set(name, next);
    else this.entries.delete(name);
  }

  /** An operation takes folder `name`; refused while anything else holds it. */
  begin(name: string, state: InFlightState): void {
    const cur = this.entries.get(name);
    if (cur) throw new CellaError('INVALID_STATE', `VM ${name} is ${cur.state === 'stopping' ? 'running' : cur.state}`);
    this.write(name, { state });
  }

  /** Records the QEMU an operation in flight spawned (or took over), the moment it exists. Not a change of state. */
  hold(name: string, qemu: Q): void {
    const cur = this.entries.get(name);
    if (!inFlight(cur)) throw new CellaError('INVALID_STATE', `VM folder ${name} is not held by an operation (${cur?.state ?? 'no entry'})`);
    cur.qemu = qemu;
  }

  /** Ends an operation's hold on `name`, if it still has it (it failed, or it was done with the folder). */
  settle(name: string): void {
    const cur = this.entries.get(name);
    if (inFlight(cur)) this.write(name, undefined);
  }

  /** QEMU `qemu` of `name` ended: its supervised entry goes. False when the entry is another's, or an operation's. */
  exited(name: string, qemu: Q): boolean {
    const cur = this.entries.get(name);
    if (!cur || cur.qemu !== qemu || inFlight(cur)) return false;
    this.write(name, undefined);
    return true;
  }

  /** Running VM `name` is being stopped on purpose; nothing if it is not running (any more). */
  stop(name: string, qemu: Q): void {
    const cur = this.entries.get(name);
    if (cur?.state === 'running' && cur.qemu === qemu) this.write(name, { ...cur, state: 'stopping' });
  }

  /** What a running VM asks of its entry: whether its QEMU's exit would be expected, and to mark it so. */
  handle(name: string, qemu: Q): VmHost {
    return {
      exitExpected: () => {
        const cur = this.entries.get(name);
        return !(cur?.state === 'running' && cur.qemu === qemu);
      },
      beginStop: () => this.stop(name, qemu),
    };
  }

  /** The running VM of folder `name` (stopping included: it runs until it is gone). */
  running(name: string): V | undefined {
    const cur = this.entries.get(name);
    return cur?.state === 'running' || cur?.state === 'stopping' ? cur.vm : undefined;
  }

  allRunning(): V[] {
    return [...this.entries.values()].flatMap((e) => (e.state === 'running' || e.state === 'stopping' ? [e.vm] : []));
  }

  parked(name: string): Extract<HostVm<Q, V, W>, { state: 'parked' }> | undefined {
    const cur = this.entries.get(name);
    return cur?.state === 'parked' ? cur : undefined;
  }

  allParked(): { name: string; entry: Extract<HostVm<Q, V, W>, { state: 'parked' }> }[] {
    return [...this.entries].flatMap(([name, e]) => (e.state === 'parked' ? [{ name, entry: e }] : []));
  }

  standby(name: string): Extract<HostVm<Q, V, W>, { state: 'standby' }> | undefined {
    const cur = this.entries.get(name);
    return cur?.state === 'standby' ? cur : undefined;
  }

  /** The folders with a standby QEMU, the oldest first. */
  allStandby(): { name: string; entry: Extract<HostVm<Q, V, W>, { state: 'standby' }> }[] {
    return [...this.entries].flatMap(([name, e]) => (e.state === 'standby' ? [{ name, entry: e }] : []));
  }

  /** Warm clones of the image in `imageDir` (every image's when absent), oldest first. */
  warm(imageDir?: string): { name: string; warm: W }[] {
    return [...this.entries].flatMap(([name, e]) =>
      e.state === 'warm' && (imageDir === undefined || e.imageDir === imageDir) ? [{ name, warm: e.warm }] : [],
    );
  }

  /** Takes the oldest warm clone of `imageDir` out of the table, for a launch that holds its QEMU from now on. */
  takeWarm(imageDir: string): W | undefined {
    const first = this.warm(imageDir)[0];
    if (first) this.write(first.name, undefined);
    return first?.warm;
  }

  /** Pids of every QEMU held here, in any state: reclaim and terminate never kill these. */
  heldPids(): Set<number> {
    return new Set([...this.entries.values()].flatMap((e) => (e.qemu ? [e.qemu.pid] : [])));
  }

  /** Folders that operations in flight hold: their QEMUs are spared even before they are recorded. */
  inFlight(): Set<string> {
    return new Set([...this.entries].flatMap(([name, e]) => (inFlight(e) ? [name] : [])));
  }

  names(): string[] {
    return [...this.entries.keys()];
  }
}
