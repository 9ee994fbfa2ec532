/** Small steps the engine's operations share: waiting on a guest, naming files, ending a restored QEMU. */
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../agent/index.js';
import { CellaError } from '../contract/index.js';
import type { QemuProcess } from '../vmm/index.js';
import type { Restored } from './core.js';
import { vmFiles } from './vm.js';

const MAX_SOCKET_PATH = 107;

/** Where a VM's app output goes: a file it is appended to (default `<vm folder>/app.log`), or null for nowhere. */
export interface AppLogOption {
  appLog?: string | null;
}

/**
 * Options of the operations that start a QEMU for a VM (launch, resume).
 * `onSpawn` learns its pid as soon as it exists, before anything is loaded
 * into it, so a caller can record it durably: a restarted cellad then finds
 * (and adopts or kills) the QEMU of an operation that was cut short.
 */
export interface StartOptions extends AppLogOption {
  onSpawn?: (pid: number, startTime: string) => void;
}

export function appLogFile(dir: string, opts: AppLogOption): string | null {
  return opts.appLog === undefined ? vmFiles(dir).appLog : opts.appLog;
}

export function mark(r: Restored, step: string): void {
  r.phases[step] = Math.round((performance.now() - r.t0) * 10) / 10;
}

/** Makes a restored VM that runs itself: clones are byte-identical, so each gets its own clock, entropy and name. */
export async function identify(r: Restored, name: string): Promise<void> {
  await Promise.all([r.agent.setClock(), r.agent.reseed(), r.agent.identify(name)]);
  mark(r, 'identified');
}

export async function dispose(r: Partial<Restored> & Pick<Restored, 'qemu'>): Promise<void> {
  r.agent?.close();
  r.qmp?.close();
  await r.appLog?.close();
  await r.qemu.kill();
}

export function checkSocketPaths(files: Record<string, string>): void {
  for (const p of Object.values(files)) {
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
      throw new CellaError('INVALID_ARGUMENT', `path ${p} is too long for a unix socket; use a shorter data directory`);
    }
  }
}

/** Resolves when cella-init says HELLO; fails when QEMU dies or the deadline passes, with the console's tail. */
export async function waitGuest(agent: AgentClient, qemu: QemuProcess, deadline: number, consoleLog: string): Promise<void> {
  const hello = new Promise<void>((resolve) => agent.once('hello', () => resolve()));
  const died = qemu.waitExit().then(() => {
    throw new CellaError('GUEST_BOOT_FAILED', `guest did not boot: ${qemu.describeExit()}; console: ${tail(consoleLog)}`);
  });
  await withTimeout(Promise.race([hello, died]), Math.max(deadline - Date.now(), 0), () => {
    throw new CellaError('GUEST_BOOT_FAILED', `guest agent did not start in time; console: ${tail(consoleLog)}`);
  });
}

/** Opens and drops one TCP connection (refused is fine). */
export function poke(host: string, port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    const done = (): void => {
      s.destroy();
      resolve();
    };
    s.once('connect', done);
    s.once('error', done);
    s.setTimeout(1000, done);
  });
}

/** Awaits `p`, or after `ms` runs `onTimeout` (whose result or throw stands in); the timer never outlives the wait. */
export async function withTimeout<T, U>(p: Promise<T>, ms: number, onTimeout: () => U | Promise<U>): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<U>((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        resolve(onTimeout());
      } catch (err) {
        reject(err);
      }
    }, ms);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}

export function tail(file: string, bytes = 2000): string {
  try {
    const s = readFileSync(file, 'utf8');
    return s.slice(-bytes).trim() || '(empty)';
  } catch {
    return '(none)';
  }
}

/** Resolves once host:port accepts a TCP connection; `check` throws to give up early. */
export async function waitPort(host: string, port: number, deadline: number, check: () => void): Promise<void> {
  for (;;) {
    check();
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host, port });
      s.setTimeout(500);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
      s.once('timeout', () => {
        s.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new CellaError('APP_NOT_READY', `port ${port} did not accept connections in time`);
    await sleep(20);
  }
}
