/**
 * Disk pressure as a state, not a surprise (ADR 0007): the free space of the
 * file system that holds the data directory (VM overlays, checkpoints, the
 * database, logs, the build cache) is watched. Below a floor, work that
 * would write a lot is refused with INSUFFICIENT_CAPACITY before it starts,
 * instead of failing halfway; crossing the floor either way is an event
 * ('low' / 'ok'), on which VMs paused by a full disk are continued and the
 * caches pruned.
 */
import { EventEmitter } from 'node:events';
import { statfsSync } from 'node:fs';
import { CellaError } from '../contract/index.js';

/** Default floor: whichever is larger, 1 GiB or 2 % of the file system. */
export const DEFAULT_MIN_FREE_MIB = 1024;
const MIN_FREE_FRACTION = 0.02;

export interface CapacityOptions {
  /** A path on the watched file system (the data directory). */
  dir: string;
  /** Free space below this is low (default: max(1 GiB, 2 % of the file system)). */
  minFreeBytes?: number;
  /** How often the space is read when nothing asks (default 2 s). */
  intervalMs?: number;
  /** How the space is read (default: statfs of `dir`); tests stand in their own. */
  read?: (dir: string) => DiskSpace;
  log?: (line: string) => void;
}

export interface DiskSpace {
  freeBytes: number;
  totalBytes: number;
}

/** Free (for an unprivileged writer) and total bytes of the file system holding `dir`. */
export function diskSpace(dir: string): DiskSpace {
  const s = statfsSync(dir);
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
}

/** Emits 'low' (DiskSpace) and 'ok' (DiskSpace) when the free space crosses the floor. */
export class DiskCapacity extends EventEmitter {
  readonly minFreeBytes: number;
  private last: DiskSpace;
  private low = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly log: (line: string) => void;
  private readonly read: (dir: string) => DiskSpace;

  constructor(private readonly opts: CapacityOptions) {
    super();
    this.log = opts.log ?? (() => {});
    this.read = opts.read ?? diskSpace;
    this.last = this.read(opts.dir);
    this.minFreeBytes = opts.minFreeBytes ?? Math.max(DEFAULT_MIN_FREE_MIB * 1024 * 1024, Math.floor(this.last.totalBytes * MIN_FREE_FRACTION));
    this.low = this.last.freeBytes < this.minFreeBytes;
    if (this.low)
      this.log(`disk: only ${mib(this.last.freeBytes)} MiB free on ${opts.dir} (floor ${mib(this.minFreeBytes)} MiB): new work is refused until there is more`);
  }

  /** Starts watching (unref'd: it never keeps the process up). */
  start(): this {
    this.timer = setInterval(() => this.check(), this.opts.intervalMs ?? 2000);
    this.timer.unref();
    return this;
  }

  /** Reads the free space now; emits on a crossing. */
  check(): DiskSpace {
    try {
      this.last = this.read(this.opts.dir);
    } catch (err) {
      this.log(`disk: cannot read the free space of ${this.opts.dir}: ${(err as Error).message}`);
      return this.last;
    }
    const low = this.last.freeBytes < this.minFreeBytes;
    if (low !== this.low) {
      this.low = low;
      this.log(
        low
          ? `disk: only ${mib(this.last.freeBytes)} MiB free on ${this.opts.dir} (floor ${mib(this.minFreeBytes)} MiB): new work is refused until there is more`
          : `disk: ${mib(this.last.freeBytes)} MiB free again on ${this.opts.dir}`,
      );
      this.emit(low ? 'low' : 'ok', this.last);
    }
    return this.last;
  }

  get isLow(): boolean {
    return this.low;
  }

  /** Throws INSUFFICIENT_CAPACITY (the contract's InsufficientCapacityException) when the free space is below the floor. */
  require(what: string): void {
    const space = this.check();
    if (!this.low) return;
    throw new CellaError(
      'INSUFFICIENT_CAPACITY',
      `${what} refused: the host's disk has ${mib(space.freeBytes)} MiB free, below the floor of ${mib(this.minFreeBytes)} MiB; free some space (terminate or delete what is not needed) and retry`,
      { details: { retryAfterSeconds: 30 } },
    );
  }

  close(): void {
    clearInterval(this.timer);
  }
}

function mib(bytes: number): number {
  return Math.floor(bytes / (1024 * 1024));
}
