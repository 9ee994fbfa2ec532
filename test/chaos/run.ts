/**
 * `npm run test:chaos`: the drills (crash, API fuzz, disk-full, two servers)
 * with a bounded budget (short by default; `CHAOS_FULL=1` for the full run,
 * or each drill's own CHAOS_* variable), then their figures on one line, e.g.
 * `chaos: 100 crash cycles, 0 VMs lost, 0 left behind; fuzz: 3000 cases, 0 5xx; disk-full: 0 frozen VMs`.
 * Exits non-zero if any drill failed.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const here = import.meta.dirname;
const drills = readdirSync(here)
  .filter((f) => f.endsWith('.test.ts'))
  .sort()
  .map((f) => path.join(here, f));
const dir = mkdtempSync(path.join(tmpdir(), 'cella-chaos-'));
const summaryFile = path.join(dir, 'summary.txt');
const code = await new Promise<number>((resolve) => {
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...drills], {
    stdio: 'inherit',
    env: { ...process.env, CHAOS_SUMMARY_FILE: summaryFile },
  });
  child.once('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
});
let lines: string[] = [];
try {
  lines = readFileSync(summaryFile, 'utf8').trim().split('\n').filter(Boolean);
} catch {
  // no drill got as far as its summary
}
rmSync(dir, { recursive: true, force: true });
process.stdout.write(`\n${lines.join('; ') || 'chaos: no drill reported'}\n${code === 0 ? 'chaos: passed' : 'chaos: FAILED'}\n`);
process.exitCode = code;
