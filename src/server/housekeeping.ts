/**
 * What keeps a long-running cellad's disk use bounded (issue 11): logs of
 * VMs and builds pruned by age and total size (a live VM's log is rotated
 * by LogHub itself and never pruned), the build cache pruned to its bound,
 * and serial consoles a guest floods cut back. Runs at start, periodically,
 * and at once when the disk runs low, when the caches shrink to a quarter.
 */
import { readdirSync, statSync, truncateSync } from 'node:fs';
import path from 'node:path';
import type { DiskCapacity } from '../capacity/index.js';
import { vmFiles } from '../engine/index.js';
import type { Images } from '../images/index.js';
import type { Lifecycle } from '../lifecycle/index.js';
import { pruneDir, type PruneLimits } from '../logs/index.js';
import type { Store } from '../store/index.js';

const DAY = 24 * 3600 * 1000;
export const VM_LOG_LIMITS: PruneLimits = { maxAgeMs: 7 * DAY, maxTotalBytes: 2 * 1024 ** 3 };
export const BUILD_LOG_LIMITS: PruneLimits = { maxAgeMs: 30 * DAY, maxTotalBytes: 512 * 1024 ** 2 };
/** A guest can write to its serial console without end; past this the file is cut back (QEMU writes on, sparse). */
export const MAX_CONSOLE_BYTES = 8 * 1024 * 1024;
export const HOUSEKEEPING_INTERVAL_MS = 10 * 60_000;

export interface HousekeepingContext {
  dataDir: string;
  store: Pick<Store, 'liveVms'>;
  images: Pick<Images, 'pruneCache'>;
  layerCacheBytes: number;
  log: (line: string) => void;
}

export async function housekeep(ctx: HousekeepingContext, opts: { lowDisk?: boolean } = {}): Promise<void> {
  const live = new Set((await ctx.store.liveVms()).map((v) => v.id));
  const shrink = (l: PruneLimits): PruneLimits => (opts.lowDisk ? { maxAgeMs: l.maxAgeMs, maxTotalBytes: l.maxTotalBytes / 4 } : l);
  const logs = path.join(ctx.dataDir, 'logs');
  const vmLogs = pruneDir(path.join(logs, 'vms'), shrink(VM_LOG_LIMITS), (name) => live.has(name.replace(/\.log(\.1)?$/, '')));
  const buildLogs = pruneDir(path.join(logs, 'builds'), shrink(BUILD_LOG_LIMITS));
  if (vmLogs + buildLogs > 0) ctx.log(`housekeeping: removed ${vmLogs} VM logs and ${buildLogs} build logs`);
  cutConsoles(path.join(ctx.dataDir, 'vms'), ctx.log);
  await ctx.images.pruneCache(opts.lowDisk ? ctx.layerCacheBytes / 4 : ctx.layerCacheBytes);
}

function cutConsoles(vmsDir: string, log: (line: string) => void): void {
  let names: string[];
  try {
    names = readdirSync(vmsDir);
  } catch {
    return;
  }
  for (const name of names) {
    const file = vmFiles(path.join(vmsDir, name)).console;
    try {
      if (statSync(file).blocks * 512 <= MAX_CONSOLE_BYTES) continue;
      truncateSync(file, 0);
      log(`housekeeping: the serial console of ${name} passed ${MAX_CONSOLE_BYTES >> 20} MiB and was cut back`);
    } catch {
      // no console file
    }
  }
}

/**
 * Watches the disk and keeps its use bounded: housekeeping now, every ten
 * minutes and when the disk runs low; VMs a full disk paused are continued
 * once it has room again. Returns what stops it all.
 */
export function scheduleHousekeeping(
  ctx: HousekeepingContext,
  capacity: DiskCapacity,
  lifecycle: Pick<Lifecycle, 'continueDiskPaused'>,
  log: (line: string) => void,
): () => void {
  const run = (lowDisk: boolean): void => void housekeep(ctx, { lowDisk }).catch((err: Error) => log(`housekeeping: ${err.message}`));
  run(capacity.isLow);
  const every = setInterval(() => run(capacity.isLow), HOUSEKEEPING_INTERVAL_MS);
  every.unref();
  const continueVms = (): void => void lifecycle.continueDiskPaused().catch((err: Error) => log(`continuing paused VMs: ${err.message}`));
  const onLow = (): void => run(true);
  capacity.on('low', onLow);
  capacity.on('ok', continueVms);
  // A VM paused again right after a crossing is tried on later ticks too.
  const retry = setInterval(continueVms, 5000);
  retry.unref();
  capacity.start();
  return () => {
    clearInterval(every);
    clearInterval(retry);
    capacity.off('low', onLow);
    capacity.off('ok', continueVms);
    capacity.close();
  };
}
