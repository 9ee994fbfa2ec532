/**
 * The MicroVM lifecycle of the contract, as one table. transition() in
 * ./index.ts is the only writer of state and refuses anything not listed here.
 *
 *   PENDING ──► RUNNING ──► SUSPENDING ──► SUSPENDED ──► RUNNING (resume)
 *      │           │            │  └──► RUNNING (suspend hook refused)
 *      └───────────┴────────────┴────────────┴──► TERMINATING ──► TERMINATED
 */
import type { VmState } from '../contract/index.js';

export const TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  PENDING: ['RUNNING', 'TERMINATING'],
  RUNNING: ['SUSPENDING', 'TERMINATING'],
  SUSPENDING: ['SUSPENDED', 'RUNNING', 'TERMINATING'],
  SUSPENDED: ['RUNNING', 'TERMINATING'],
  TERMINATING: ['TERMINATED'],
  TERMINATED: [],
};

export function canTransition(from: VmState, to: VmState): boolean {
  return TRANSITIONS[from].includes(to);
}

/** States in which the VM's QEMU is (or may be) running and billed as running time. */
export const RUNNING_STATES: ReadonlySet<VmState> = new Set(['RUNNING', 'SUSPENDING']);

/**
 * The states that keep the reason they were entered with: why a VM ended. The
 * contract has no stateReason on a healthy VM, so a VM that runs on or sleeps
 * (a refused suspend, an interrupted one, a guest's own request) has none; the
 * reason goes to cellad's log. A condition inside a state (a disk-full pause, a
 * checkpoint that would not restore) is a patch the next transition clears.
 */
export const REASON_STATES: ReadonlySet<VmState> = new Set(['TERMINATING', 'TERMINATED']);
