/**
 * `npm run test:unit`: the tests that boot no VM (src/**, test/control-plane,
 * scripts), in four shards. Each shard is one process that imports its files
 * (./unit-shard.ts), so tsx and the shared module graph load four times, not
 * once per file: that was most of the run's CPU. A shard prints its report
 * when it ends, and any failing shard fails the run. The control-plane files
 * come first and are dealt round the shards: their tests wait on real timers
 * (the contract's deadlines are whole seconds), and that waiting overlaps the
 * other files' work.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The `*.test.ts` files in `dir`, and `depth` levels of folders below it. */
function testFiles(dir: string, depth: number): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory() && depth > 0) out.push(...testFiles(rel, depth - 1));
    else if (e.isFile() && e.name.endsWith('.test.ts')) out.push(rel);
  }
  return out.sort();
}

const files = [...testFiles('test/control-plane', 0), ...testFiles('src', 2).filter((f) => f.split(path.sep).length > 2), ...testFiles('scripts', 0)];

const SHARDS = 4;
const shards: string[][] = Array.from({ length: SHARDS }, () => []);
files.forEach((f, i) => shards[i % SHARDS]!.push(f));

const codes = await Promise.all(
  shards.map(
    (shard) =>
      new Promise<number>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--test-reporter=spec', path.join(ROOT, 'scripts/unit-shard.ts'), ...shard], {
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const out: Buffer[] = [];
        child.stdout.on('data', (b: Buffer) => out.push(b));
        child.stderr.on('data', (b: Buffer) => out.push(b));
        child.on('close', (code) => {
          process.stdout.write(Buffer.concat(out));
          resolve(code ?? 1);
        });
      }),
  ),
);
process.exitCode = codes.some((c) => c !== 0) ? 1 : 0;
