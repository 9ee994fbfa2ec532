/**
 * One cgroup per QEMU, `cella/<data dir tag>/<VM folder name>`, with CPU,
 * memory and pid limits from the VM's size. cgroup v2 (one tree, with
 * cgroup.controllers at its root) and v1 (a tree per controller) are told
 * apart at run time. Where no cgroup can be made (read-only cgroupfs, no
 * controllers delegated), VMs run without limits and that is logged once.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export type Controller = 'cpu' | 'memory' | 'pids';
const CONTROLLERS: readonly Controller[] = ['cpu', 'memory', 'pids'];

/**
 * What QEMU holds beyond guest RAM: the TCG translation cache (tb-size, 32 MiB
 * for VMs, 64 for builders), the binary and its libraries, device model,
 * coroutine stacks and migration buffers. Measured here on an idle 256 MiB
 * clone: 64 MiB RSS (25 anonymous, 40 file: libraries and image RAM pages);
 * after its guest touched 150 MiB, 182 MiB anonymous, so ~35 MiB of QEMU's own
 * beside ~40 MiB of mapped files. A guest that touches all its RAM thus needs
 * ~RAM + 75 MiB (+ the full TCG cache); 256 MiB leaves room for page cache of
 * disk I/O and a suspend's stream (reclaimable, but charged to the cgroup)
 * without letting a VM take much more than its size.
 */
export const QEMU_OVERHEAD_MIB = 256;
/** QEMU's threads (main loop, vCPUs, RCU, block I/O workers up to 64): far above what it needs, far below a fork bomb. */
export const QEMU_PIDS_MAX = 512;
const CPU_PERIOD_US = 100_000;

export interface CgroupLimits {
  /** CFS quota per period: one full CPU per vCPU. */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
  memoryBytes: number;
  pids: number;
}

export function cgroupLimits(size: { memoryMiB: number; vcpus: number }): CgroupLimits {
  return {
    cpuQuotaUs: size.vcpus * CPU_PERIOD_US,
    cpuPeriodUs: CPU_PERIOD_US,
    memoryBytes: (size.memoryMiB + QEMU_OVERHEAD_MIB) * 1024 * 1024,
    pids: QEMU_PIDS_MAX,
  };
}

/** The files that carry `limits`, in the order they must be written (v1 checks quota against period). */
export function limitFiles(version: 1 | 2, limits: CgroupLimits): { controller: Controller; file: string; value: string }[] {
  if (version === 2) {
    return [
      { controller: 'cpu', file: 'cpu.max', value: `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}` },
      { controller: 'memory', file: 'memory.max', value: String(limits.memoryBytes) },
      { controller: 'pids', file: 'pids.max', value: String(limits.pids) },
    ];
  }
  return [
    { controller: 'cpu', file: 'cpu.cfs_period_us', value: String(limits.cpuPeriodUs) },
    { controller: 'cpu', file: 'cpu.cfs_quota_us', value: String(limits.cpuQuotaUs) },
    { controller: 'memory', file: 'memory.limit_in_bytes', value: String(limits.memoryBytes) },
    { controller: 'pids', file: 'pids.max', value: String(limits.pids) },
  ];
}

/** Where the controllers are: v2's single tree, or v1's tree per controller (only those mounted). */
export type CgroupLayout = { version: 2; root: string; controllers: Controller[] } | { version: 1; roots: Partial<Record<Controller, string>> };

export function detectLayout(fsRoot = '/sys/fs/cgroup'): CgroupLayout | undefined {
  const controllersFile = path.join(fsRoot, 'cgroup.controllers');
  if (existsSync(controllersFile)) {
    const have = readFileSync(controllersFile, 'utf8').trim().split(/\s+/);
    const controllers = CONTROLLERS.filter((c) => have.includes(c));
    return controllers.length ? { version: 2, root: fsRoot, controllers } : undefined;
  }
  // v1 (or hybrid, whose cgroup2 tree at unified/ carries no controllers): a tree per controller, by its name.
  const roots: Partial<Record<Controller, string>> = {};
  for (const c of CONTROLLERS) if (existsSync(path.join(fsRoot, c, 'cgroup.procs'))) roots[c] = path.join(fsRoot, c);
  return Object.keys(roots).length ? { version: 1, roots } : undefined;
}

/** One QEMU's cgroup: a directory in v2, one per controller in v1. */
export class Cgroup {
  constructor(private dirs: string[]) {}

  /** The cgroup.procs files a process writes its pid to, to join. */
  get procsFiles(): string[] {
    return this.dirs.map((d) => path.join(d, 'cgroup.procs'));
  }

  get paths(): readonly string[] {
    return this.dirs;
  }

  /** Follows a VM folder that was renamed (a warm clone launched under its id); a leftover of that name is removed first. */
  rename(name: string): void {
    this.dirs = this.dirs.map((d) => {
      const to = path.join(path.dirname(d), name);
      tryRmdir(to);
      renameSync(d, to);
      return to;
    });
  }

  /** Removes the cgroup once its processes are gone (the kernel may take a moment after they are reaped). */
  async remove(): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      this.dirs = this.dirs.filter((d) => !tryRmdir(d));
      if (!this.dirs.length) return;
      await sleep(20);
    }
  }
}

/** rmdir, true when the directory is gone (or never was). */
function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** The cgroups of one data directory's QEMUs, under `cella/<tag>` in every hierarchy. */
export class Cgroups {
  private warned = false;

  constructor(
    private readonly layout: CgroupLayout | undefined,
    /** e.g. `cella/<tag>`: one group per data directory, so engines of other data directories are left alone. */
    private readonly group: string,
    private readonly log: (line: string) => void,
  ) {
    if (!layout) this.warn('no cgroup controllers found');
  }

  static open(group: string, log: (line: string) => void): Cgroups {
    return new Cgroups(detectLayout(), group, log);
  }

  get version(): 1 | 2 | undefined {
    return this.layout?.version;
  }

  /**
   * Makes cgroup `name` with `limits`; undefined (logged once) when cgroups
   * cannot be written here, for the VM to run on without them.
   */
  create(name: string, limits: CgroupLimits): Cgroup | undefined {
    const layout = this.layout;
    if (!layout) return undefined;
    const dirs = this.dirsOf(name);
    try {
      if (layout.version === 2) this.prepareV2(layout.root, layout.controllers);
      for (const d of dirs) mkdirSync(d, { recursive: true });
      for (const { controller, file, value } of limitFiles(layout.version, limits)) {
        const dir = layout.version === 2 ? (layout.controllers.includes(controller) ? dirs[0] : undefined) : this.dirIn(controller, name);
        if (dir) writeFileSync(path.join(dir, file), value);
      }
      return new Cgroup(dirs);
    } catch (err) {
      for (const d of dirs) tryRmdir(d);
      this.warn((err as Error).message);
      return undefined;
    }
  }

  /** The cgroup `name` left by an earlier cellad, for an adopted QEMU. */
  existing(name: string): Cgroup | undefined {
    const dirs = this.dirsOf(name).filter((d) => existsSync(d));
    return dirs.length ? new Cgroup(dirs) : undefined;
  }

  /** Removes this group's cgroups not named in `keep` (rmdir spares any that still hold a process). */
  reclaim(keep: ReadonlySet<string>): void {
    for (const base of this.groupDirs()) {
      let names: string[];
      try {
        names = readdirSync(base, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => e.name);
      } catch {
        continue;
      }
      for (const n of names) if (!keep.has(n)) tryRmdir(path.join(base, n));
    }
  }

  /** Removes the group itself once it is empty (no VM of this data directory runs on). */
  close(): void {
    for (const d of this.groupDirs()) tryRmdir(d);
  }

  private groupDirs(): string[] {
    const layout = this.layout;
    if (!layout) return [];
    if (layout.version === 2) return [path.join(layout.root, this.group)];
    return Object.values(layout.roots).map((root) => path.join(root, this.group));
  }

  private dirsOf(name: string): string[] {
    return this.groupDirs().map((g) => path.join(g, name));
  }

  private dirIn(controller: Controller, name: string): string | undefined {
    const layout = this.layout;
    const root = layout?.version === 1 ? layout.roots[controller] : undefined;
    return root && path.join(root, this.group, name);
  }

  /** v2 hands controllers down one level at a time: enable them in every ancestor of the leaf. */
  private prepareV2(root: string, controllers: Controller[]): void {
    const enable = controllers.map((c) => `+${c}`).join(' ');
    const ancestors = [root];
    for (const part of this.group.split('/')) ancestors.push(path.join(ancestors[ancestors.length - 1] as string, part));
    for (const dir of ancestors) {
      mkdirSync(dir, { recursive: true });
      const control = path.join(dir, 'cgroup.subtree_control');
      const enabled = readFileSync(control, 'utf8').trim().split(/\s+/);
      if (!controllers.every((c) => enabled.includes(c))) writeFileSync(control, enable);
    }
  }

  private warn(reason: string): void {
    if (this.warned) return;
    this.warned = true;
    this.log(`cgroups unavailable (${reason}): VMs run without CPU, memory and pid limits`);
  }
}
