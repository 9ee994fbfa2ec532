/**
 * What /proc says about processes that may not be our children: QEMUs left
 * running by a cellad that died, found again by a new one.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import type { Jail } from './jail.js';

/** State (field 3) and start time (field 22, clock ticks since boot) of /proc/PID/stat. */
function readStat(pid: number): { state: string; startTime: string } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [state, startTime] = [fields[0], fields[19]];
  return state && startTime ? { state, startTime } : undefined;
}

/**
 * The start time of process `pid` (field 22 of /proc/PID/stat), which with the
 * pid names one process for good: a reused pid has another start time.
 * Undefined when no such process runs (a zombie has ended: only its parent
 * has yet to reap it).
 */
export function processStartTime(pid: number): string | undefined {
  const s = readStat(pid);
  return s && s.state !== 'Z' && s.state !== 'X' ? s.startTime : undefined;
}

export function processArgs(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return [];
  }
}

/** Paths of the files process `pid` holds open; they follow renames, unlike its command line. */
export function openFiles(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  let fds: string[];
  try {
    fds = readdirSync(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const fd of fds) {
    try {
      out.push(readlinkSync(`${dir}/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

export function listPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/**
 * The jail process `pid` runs in, as /proc shows it now: its uid and gid, and
 * its root (which follows a renamed folder). Undefined for a process running
 * as root with the host's root, i.e. not jailed.
 */
export function processJail(pid: number): Jail | undefined {
  let status: string;
  let root: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
    root = readlinkSync(`/proc/${pid}/root`);
  } catch {
    return undefined;
  }
  const id = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  const [uid, gid] = [id('Uid'), id('Gid')];
  const chroot = root === '/' ? undefined : root;
  return uid === 0 && !chroot ? undefined : { uid, gid, chroot };
}
