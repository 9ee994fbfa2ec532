/**
 * `npm run test:unit`: the tests that boot no VM (src/**, test/control-plane,
 * scripts), one process per file as `node --test` runs them, four at a time.
 * The control-plane files start first: their tests wait on real timers (the
 * contract's deadlines are whole seconds), and `node --test` would start
 * them last, in path order, where that waiting is the run's tail instead of
 * overlapping the other files' work.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
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

const stream = run({ files: files.map((f) => path.join(ROOT, f)), concurrency: 4 });
stream.on('test:fail', () => (process.exitCode = 1));
stream.pipe(new spec()).pipe(process.stdout);
