/**
 * Metering: what each MicroVM used, from the counters the lifecycle keeps in
 * the store (running time, checkpoint bytes written and read, checkpoint
 * bytes × time stored), plus the interval still open in its current state.
 */
import { baselineVcpus, type Usage } from '../contract/index.js';
import { RUNNING_STATES } from '../lifecycle/index.js';
import type { VmRecord } from '../store/index.js';

const GIB = 1024 ** 3;
const HOUR_MS = 3_600_000;

export function usageOf(v: VmRecord, now: number): Usage {
  const open = Math.max(0, now - v.stateSince);
  const runningMs = v.runningMs + (RUNNING_STATES.has(v.state) ? open : 0);
  const storageByteMs = v.storageByteMs + (v.state === 'SUSPENDED' ? v.checkpointBytes * open : 0);
  const runningSeconds = runningMs / 1000;
  return {
    microvmId: v.id,
    runningSeconds: round(runningSeconds),
    // At the baseline, as the contract prices compute; the guest may use up to its peak.
    vcpuSeconds: round(runningSeconds * baselineVcpus(v.memoryMiB)),
    gibSeconds: round((runningSeconds * v.memoryMiB) / 1024),
    snapshotBytesWritten: v.bytesWritten,
    snapshotBytesRead: v.bytesRead,
    snapshotStorageGibHours: round(storageByteMs / GIB / HOUR_MS, 9),
  };
}

export function sumUsage(all: Usage[]): Usage {
  const total: Usage = { runningSeconds: 0, vcpuSeconds: 0, gibSeconds: 0, snapshotBytesWritten: 0, snapshotBytesRead: 0, snapshotStorageGibHours: 0 };
  for (const u of all) {
    total.runningSeconds += u.runningSeconds;
    total.vcpuSeconds += u.vcpuSeconds;
    total.gibSeconds += u.gibSeconds;
    total.snapshotBytesWritten += u.snapshotBytesWritten;
    total.snapshotBytesRead += u.snapshotBytesRead;
    total.snapshotStorageGibHours += u.snapshotStorageGibHours;
  }
  return {
    ...total,
    runningSeconds: round(total.runningSeconds),
    vcpuSeconds: round(total.vcpuSeconds),
    gibSeconds: round(total.gibSeconds),
    snapshotStorageGibHours: round(total.snapshotStorageGibHours, 9),
  };
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
