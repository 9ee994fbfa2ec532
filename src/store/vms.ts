/** The `vms` table: each MicroVM's desired and observed state, deadlines and usage counters. */
import type { VmState } from '../contract/index.js';
import type { NetworkPolicy } from '../net/index.js';
import { int, json, nullable, real, text, type Table } from './columns.js';

/** The Microvm's settings as the caller asked for them (desired state); kept as JSON in `vms.spec`. */
export interface VmSpec {
  executionRoleArn?: string;
  idlePolicy?: { maxIdleDurationSeconds: number; suspendedDurationSeconds: number; autoResumeEnabled: boolean };
  maximumDurationInSeconds: number;
  /**
   * Beyond AWS (E2B sandboxes): the maximum duration is a timeout the caller
   * moves (Lifecycle.setDeadline), and reaching it suspends the VM instead of
   * terminating it when `onExpiry` is 'suspend' (the deadline then applies
   * while it runs).
   */
  timeout?: { onExpiry: 'terminate' | 'suspend' };
  ingressNetworkConnectors: string[];
  egressNetworkConnectors: string[];
  /** What the connectors resolved to at RunMicrovm; absent on VMs from before connectors were enforced (no egress). */
  network?: NetworkPolicy;
  loggingDisabled: boolean;
}

export interface VmRecord {
  id: string;
  imageName: string;
  imageArn: string;
  imageVersion: string;
  state: VmState;
  /** Bumped by every state change; timers and background jobs carry the one they were made for. */
  generation: number;
  stateReason: string | null;
  spec: VmSpec;
  /** The image's tier, the baseline (ImageConfig.memoryMiB): what the memory quota and metering count. */
  memoryMiB: number;
  /** The guest's vCPUs, at its peak. */
  vcpus: number;
  createdAt: number;
  terminatedAt: number | null;
  /** Observed: where its QEMU runs, for re-adoption after a restart. */
  slot: number | null;
  pid: number | null;
  pidStartTime: string | null;
  /** Deadlines (ms since epoch); null when not armed. */
  idleDeadline: number | null;
  suspendedDeadline: number | null;
  maxDeadline: number;
  /** Usage counters; the open interval since `stateSince` is added when the state ends. */
  stateSince: number;
  runningMs: number;
  bytesWritten: number;
  bytesRead: number;
  /** Checkpoint bytes × milliseconds stored. */
  storageByteMs: number;
  checkpointBytes: number;
}

/** What a write may change besides state: never the VM's identity, image or spec. */
export type VmPatch = Partial<Omit<VmRecord, 'id' | 'state' | 'generation' | 'spec' | 'imageName' | 'imageArn' | 'imageVersion'>>;

/** A page of VMs in creation order; `after` is the last VM of the previous page. */
export interface VmPage {
  after?: { createdAt: number; id: string };
  limit: number;
  imageName?: string;
  imageVersion?: string;
}

export const VMS: Table<VmRecord> = {
  name: 'vms',
  key: ['id'],
  columns: {
    id: text('id'),
    imageName: text('image_name'),
    imageArn: text('image_arn'),
    imageVersion: text('image_version'),
    state: text('state'),
    generation: int('generation'),
    stateReason: nullable(text('state_reason')),
    spec: json('spec'),
    memoryMiB: int('memory_mib'),
    vcpus: int('vcpus'),
    createdAt: int('created_at'),
    terminatedAt: nullable(int('terminated_at')),
    slot: nullable(int('slot')),
    pid: nullable(int('pid')),
    pidStartTime: nullable(text('pid_start_time')),
    idleDeadline: nullable(int('idle_deadline')),
    suspendedDeadline: nullable(int('suspended_deadline')),
    maxDeadline: int('max_deadline'),
    stateSince: int('state_since'),
    runningMs: int('running_ms'),
    bytesWritten: int('bytes_written'),
    bytesRead: int('bytes_read'),
    storageByteMs: real('storage_byte_ms'),
    checkpointBytes: int('checkpoint_bytes'),
  },
};
