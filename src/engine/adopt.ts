/**
 * After a restart of cellad (ADR 0003, 0007): adopting the QEMUs an earlier
 * cellad left running for VMs that live on, and reclaiming everything else of
 * this data directory that nobody holds (QEMUs, folders, namespaces, cgroups).
 */
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { AgentClient } from '../agent/index.js';
import { CellaError } from '../contract/index.js';
import { networkForSlot, reclaimNamespaces } from '../net/index.js';
import { QemuProcess, QmpClient, listPids, openFiles, processArgs, processStartTime } from '../vmm/index.js';
import { supervise } from './clone.js';
import { vmDir, type EngineCore } from './core.js';
import { appLogFile, type AppLogOption } from './helpers.js';
import { AppLog, RunningVm, vmFiles, type VmRef } from './vm.js';

export interface ReclaimResult {
  killed: number;
  removedDirs: number;
  removedNamespaces: number;
}

/**
 * Takes over a VM whose QEMU an earlier cellad started (with `outliveParent`)
 * and left running when it died: if process `pid` with start time `startTime`
 * (RunningVm.pid/pidStartTime) still runs from this VM's folder, reconnects
 * to its QMP, control and log sockets and supervises it like any VM.
 * Undefined, and nothing is killed, when that process is gone or is not this
 * VM's. The VM is left in whatever state QMP reports (`queryStatus()`): one
 * found paused, e.g. halfway through a launch or suspend, stays paused for
 * the caller to continue or terminate; a running one has its agent checked.
 */
export async function adopt(core: EngineCore, ref: VmRef, pid: number, startTime: string, opts: AppLogOption): Promise<RunningVm | undefined> {
  if (core.hosts.running(ref.id)) throw new CellaError('INVALID_STATE', `VM ${ref.id} is running`);
  if (processStartTime(pid) !== startTime || folderOfQemu(core, pid) !== ref.id) return undefined;
  const dir = vmDir(core, ref.id);
  const files = vmFiles(dir);
  core.hosts.begin(ref.id, 'adopting');
  const qemu = QemuProcess.adopt(pid, startTime, files.qemuLog, core.cgroups.existing(ref.id));
  if (!qemu) {
    core.hosts.settle(ref.id);
    return undefined;
  }
  core.hosts.hold(ref.id, qemu);
  let qmp: QmpClient | undefined;
  let agent: AgentClient | undefined;
  let appLog: AppLog | undefined;
  try {
    // QEMU's sockets (server=on) take a new client once the dead cellad's connection dropped.
    qmp = await QmpClient.connect(files.qmp, 10_000, () => processStartTime(pid) === startTime);
    [agent, appLog] = await Promise.all([AgentClient.connect(files.ctl), AppLog.connect(files.log, appLogFile(dir, opts))]);
    const { running } = await qmp.execute<{ running: boolean }>('query-status');
    // The guest agent reopens its port when it reads EOF, so it answers the new connection.
    if (running) await agent.ping();
    return supervise(core, new RunningVm(ref, dir, networkForSlot(ref.slot), qemu, qmp, agent, appLog, core.hosts.handle(ref.id, qemu)));
  } catch (err) {
    qemu.release();
    agent?.close();
    qmp?.close();
    await appLog?.close();
    if (processStartTime(pid) !== startTime) return undefined;
    throw err;
  } finally {
    core.hosts.settle(ref.id);
  }
}

/**
 * Removes everything of this data directory a cellad that died left behind,
 * except the VMs in `keep` (running ones, still to adopt, and suspended ones,
 * with their folders and namespaces): QEMUs running from another folder of
 * `vms/` (VMs, warm clones, templates) are killed, the other folders of
 * `vms/` removed, the namespaces this data directory made deleted, once
 * nothing runs in them, and its cgroups of QEMUs that ended removed. What
 * this engine itself holds (running VMs, warm clones, spare namespaces,
 * operations in flight) is spared; the intended use is right after open(),
 * before any launch, with no other engine on this data directory.
 */
export async function reclaim(core: EngineCore, keep: Iterable<VmRef>): Promise<ReclaimResult> {
  const ids = new Set<string>(core.hosts.names());
  const slots = new Set<number>([...core.networks.slots(), ...core.hosts.allRunning().map((vm) => vm.ref.slot)]);
  for (const ref of keep) {
    ids.add(ref.id);
    slots.add(ref.slot);
  }
  // Every QEMU of this data directory that the engine does not hold goes, kept folders included: a
  // suspended VM's folder may hold the QEMU of a restore that a crash cut short (ADR 0007).
  const held = core.hosts.heldPids();
  const busy = core.hosts.inFlight();
  const strays = listPids().flatMap((pid) => {
    const folder = held.has(pid) ? undefined : folderOfQemu(core, pid);
    return folder !== undefined && !busy.has(folder) ? [{ pid, folder }] : [];
  });
  const killed = await Promise.all(strays.map(({ pid, folder }) => killFound(core, pid, folder)));
  let removedDirs = 0;
  for (const name of readdirSync(path.join(core.dataDir, 'vms'))) {
    // A kept folder keeps its VM's files; what a suspend cut short (a half-written checkpoint) goes.
    if (ids.has(name)) {
      rmSync(`${vmFiles(vmDir(core, name)).checkpoint}.tmp`, { force: true });
      continue;
    }
    rmSync(vmDir(core, name), { recursive: true, force: true });
    removedDirs++;
  }
  const removedNamespaces = await reclaimNamespaces(core.namespaces, slots);
  // The killed QEMUs' cgroups went as they exited; these are those of QEMUs that ended while no cellad ran.
  core.cgroups.reclaim(ids);
  return { killed: killed.filter(Boolean).length, removedDirs, removedNamespaces };
}

/**
 * The folder under `vms/` that process `pid` is a QEMU of, if it is one of
 * this data directory's (its QMP socket is there). Its open files tell the
 * folder's current name: a warm clone's was renamed when it was launched,
 * while its command line keeps the old one.
 */
function folderOfQemu(core: EngineCore, pid: number): string | undefined {
  const vms = `${path.join(core.dataDir, 'vms')}/`;
  const args = processArgs(pid);
  const i = args.indexOf('-qmp');
  const qmp = i < 0 ? undefined : args[i + 1];
  if (!qmp?.startsWith(`unix:${vms}`)) return undefined;
  const file = openFiles(pid).find((f) => f.startsWith(vms)) ?? qmp.slice('unix:'.length);
  return file.slice(vms.length).split('/')[0];
}

/** Kills every QEMU running from folder `name` of `vms/` that this engine does not hold. */
export async function killQemusIn(core: EngineCore, name: string): Promise<number> {
  const held = core.hosts.heldPids();
  const found = listPids().filter((pid) => !held.has(pid) && folderOfQemu(core, pid) === name);
  const killed = await Promise.all(found.map((pid) => killFound(core, pid, name)));
  return killed.filter(Boolean).length;
}

/** Takes over QEMU `pid` (of folder `name`) as adopted, so it is killed and waited for like any adopted one, its cgroup removed. */
async function killFound(core: EngineCore, pid: number, name: string): Promise<boolean> {
  const startTime = processStartTime(pid);
  if (startTime === undefined) return false;
  const qemu = QemuProcess.adopt(pid, startTime, vmFiles(vmDir(core, name)).qemuLog, core.cgroups.existing(name));
  if (!qemu) return false;
  await qemu.kill();
  return true;
}
