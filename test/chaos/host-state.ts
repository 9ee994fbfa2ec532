/**
 * What a data directory holds on the host, read from outside cellad: its
 * QEMUs (by the folder under vms/ their open files name, as the engine tells
 * them), its namespaces (owner tag or intent file), its cgroups and folders.
 * The drills compare this with what the store says is live.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { processStartTime } from '../../src/vmm/index.js';

export interface HostState {
  /** Folder under vms/ → pids of live QEMUs running from it. */
  qemus: Map<string, number[]>;
  /** Slots of namespaces tagged with this data directory's owner tag, or noted in its intent files. */
  namespaces: number[];
  /** Names of VM cgroups under cella/<tag> (any hierarchy). */
  cgroups: string[];
  /** Folders of vms/. */
  folders: string[];
}

export function ownerTag(dataDir: string): string {
  return createHash('sha256').update(realpathSync(dataDir)).digest('hex').slice(0, 16);
}

export function hostState(dataDir: string): HostState {
  const real = realpathSync(dataDir);
  const vms = `${path.join(real, 'vms')}/`;
  const qemus = new Map<string, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    let args: string[];
    try {
      args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const i = args.indexOf('-qmp');
    const qmp = i < 0 ? undefined : args[i + 1];
    if (!qmp?.startsWith(`unix:${vms}`) || processStartTime(pid) === undefined) continue;
    let file = qmp.slice('unix:'.length);
    try {
      file =
        readdirSync(`/proc/${pid}/fd`)
          .map((fd) => safeReadlink(`/proc/${pid}/fd/${fd}`))
          .find((f) => f.startsWith(vms)) ?? file;
    } catch {
      // gone meanwhile
    }
    const folder = file.slice(vms.length).split('/')[0] as string;
    qemus.set(folder, [...(qemus.get(folder) ?? []), pid]);
  }
  const tag = ownerTag(dataDir);
  const intents = new Set(existsSync(path.join(real, 'netns')) ? readdirSync(path.join(real, 'netns')) : []);
  const namespaces = (existsSync('/run/netns') ? readdirSync('/run/netns') : [])
    .filter((n) => /^cella-\d+$/.test(n))
    .map((n) => Number(n.slice('cella-'.length)))
    .filter((slot) => {
      let alias = '';
      try {
        alias = readFileSync(`/sys/class/net/cellah${slot}/ifalias`, 'utf8').trim();
      } catch {
        // no veth yet
      }
      return alias === `cella-owner:${tag}` || (alias === '' && intents.has(String(slot)));
    });
  const cgroups = new Set<string>();
  for (const root of ['/sys/fs/cgroup', ...['cpu', 'memory', 'pids'].map((c) => `/sys/fs/cgroup/${c}`)]) {
    const dir = path.join(root, 'cella', tag);
    if (!existsSync(dir)) continue;
    for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) cgroups.add(d.name);
  }
  const folders = existsSync(path.join(real, 'vms')) ? readdirSync(path.join(real, 'vms')) : [];
  return { qemus, namespaces, cgroups: [...cgroups], folders };
}

function safeReadlink(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}
