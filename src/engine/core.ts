/**
 * What the engine's operations share: its settings, its host state (host.ts)
 * and the host resources they draw on. The Engine class (index.ts) makes one
 * and hands it to each operation; nothing else holds one.
 */
import type { EventEmitter } from 'node:events';
import path from 'node:path';
import type { AgentClient } from '../agent/index.js';
import type { NamespaceOwner, NetworkPool, VmNetwork } from '../net/index.js';
import type { GuestArtifacts } from '../setup/index.js';
import type { AccelInfo, Cgroups, QemuProcess, QmpClient, SpawnServer } from '../vmm/index.js';
import type { HostTable } from './host.js';
import type { AppLog, RunningVm } from './vm.js';

export interface EngineCore {
  /** The real path: reclaim() and adopt() match it against the paths /proc shows. */
  readonly dataDir: string;
  readonly guest: GuestArtifacts;
  readonly accel: AccelInfo;
  /** Snapshots carry it; a launch refuses a snapshot made by anything else. */
  readonly fingerprint: string;
  /** Starts every QEMU (ADR 0012); closed with the engine. */
  readonly spawner: SpawnServer;
  readonly log: (line: string) => void;
  readonly qemuBinary: string;
  /** QEMUs of VMs run on if cellad dies, for a restarted one to adopt (EngineOptions.outliveParent). */
  readonly outliveParent: boolean;
  /** QEMUs drop to their own uid in a chroot (see src/vmm/jail.ts); only root can hand them one. */
  readonly jailed: boolean;
  readonly networks: NetworkPool;
  /** The tag and intent folder of this data directory's namespaces. */
  readonly namespaces: NamespaceOwner;
  /** One cgroup per QEMU, under `cella/<data directory tag>`. */
  readonly cgroups: Cgroups;
  readonly hosts: Hosts;
  /** Builder uids in use (a builder has no network slot to take its uid from). */
  readonly builderUids: Set<number>;
  /** How long a suspended VM's stopped QEMU is kept (EngineOptions.parkSeconds); 0: not at all. */
  readonly parkMs: number;
  /** Standby QEMUs kept for suspended VMs (EngineOptions.standbyQemus; 0: none), and those in the making (standby.ts). */
  readonly standbyMax: number;
  readonly standbyJobs: Map<string, Promise<void>>;
  /** Bytes of checkpoint pages that standby QEMUs may hold in advance, all together (EngineOptions.standbyPreloadMiB). */
  readonly standbyPreloadBytes: number;
  /** Set by close(): no more warm clones, and a suspend no longer parks. */
  closing: boolean;
  /** Where 'vm-exit' and 'vm-io-error' are emitted: the Engine. */
  readonly events: EventEmitter;
}

export type Hosts = HostTable<QemuProcess, RunningVm, WarmVm>;

/** A restored QEMU and its connections, before it becomes a RunningVm. */
export interface Restored {
  dir: string;
  net: VmNetwork;
  qemu: QemuProcess;
  qmp: QmpClient;
  agent: AgentClient;
  appLog: AppLog;
  t0: number;
  phases: Record<string, number>;
}

/** A paused clone in the warm pool (its image is in its host entry). */
export interface WarmVm extends Restored {
  /** Stops the pool's own supervision once the clone is handed out. */
  detach: () => void;
}

export function vmDir(core: EngineCore, name: string): string {
  return path.join(core.dataDir, 'vms', name);
}
