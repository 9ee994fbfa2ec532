/**
 * The drills' common parts: cellad as a child process that can be killed
 * with SIGKILL (optionally armed with a crash point), budgets from the
 * environment, and the one summary line each drill leaves for
 * `npm run test:chaos` (test/chaos/run.ts) to print.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { networkForSlot } from '../../src/net/index.js';
import { getAt } from '../helpers.js';

const FIXTURE = path.join(import.meta.dirname, '..', 'fixtures', 'cellad.ts');

export interface Daemon {
  url: string;
  proxyPort: number;
  child: ChildProcess;
  /** SIGKILL, and wait until it is gone. */
  kill(): Promise<void>;
  /** Resolves with its exit code/signal when it ends by itself (an armed crash point). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts cellad on `dataDir`; `crashAt` arms a crash point (src/host/crash.ts).
 * Rejects if it dies before it serves.
 */
export async function startDaemon(dataDir: string, opts: { crashAt?: string; resumeWindow?: number } = {}): Promise<Daemon> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.CELLA_CRASH_AT;
  if (opts.crashAt) env.CELLA_CRASH_AT = opts.crashAt;
  env.CELLA_RESUME_WINDOW = String(opts.resumeWindow ?? 0);
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, dataDir], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let errTail = '';
  child.stderr?.on('data', (c: Buffer) => {
    errTail = (errTail + c.toString()).slice(-4000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const ready = await new Promise<{ url: string; proxyPort: number }>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as { url: string; proxyPort: number });
    });
    void exited.then(({ code, signal }) => reject(new Error(`cellad exited (${code ?? signal}) before serving: ${errTail}`)));
  });
  return {
    ...ready,
    child,
    exited,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A drill's budget: `name` from the environment, else `full` under CHAOS_FULL=1, else `short`. */
export function budget(name: string, short: number, full: number): number {
  const v = process.env[name];
  if (v !== undefined && Number.isInteger(Number(v)) && Number(v) >= 0) return Number(v);
  return process.env.CHAOS_FULL === '1' ? full : short;
}

/** Records a drill's summary line (printed by test/chaos/run.ts, and to stdout). */
export function summary(line: string): void {
  process.stdout.write(`${line}\n`);
  const file = process.env.CHAOS_SUMMARY_FILE;
  if (file) appendFileSync(file, `${line}\n`);
}

/** The slot a VM's row records (read from the store's file, as another process may hold it). */
export function slotOf(dataDir: string, id: string): number | undefined {
  const db = new Database(path.join(dataDir, 'cella.db'), { readonly: true });
  try {
    const row = db.prepare('SELECT slot FROM vms WHERE id = ?').get(id) as { slot: number | null } | undefined;
    return row?.slot ?? undefined;
  } finally {
    db.close();
  }
}

/** GET from the demo app of VM `id` through its namespace address (no proxy, no token). */
export async function demoGet(dataDir: string, id: string, p: string): Promise<string> {
  const slot = slotOf(dataDir, id);
  if (slot === undefined) throw new Error(`MicroVM ${id} has no slot`);
  const r = await getAt({ host: networkForSlot(slot).hostAddress, port: 8080 }, p);
  if (r.status !== 200) throw new Error(`GET ${p} on ${id}: ${r.status} ${r.body}`);
  return r.body;
}

/** A seeded PRNG (mulberry32), so a failing drill can be run again as it was. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedFromEnv(): number {
  const s = Number(process.env.CHAOS_SEED);
  return Number.isInteger(s) ? s : Math.floor(Math.random() * 2 ** 31);
}
