import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// cella-init's parsers read bytes from the host and from guest users; a crash there panics PID 1.
// guest/init/test/fuzz_parsers.c runs them on edge cases and seeded random input under ASan and UBSan.
const GUEST = fileURLToPath(new URL('../../guest', import.meta.url));
/** The repository's own build folder (ignored by git), kept between runs. */
const FUZZ_BUILD = fileURLToPath(new URL('../../.cella-build/fuzz', import.meta.url));
const hasGcc = !spawnSync('gcc', ['--version']).error;

// Fixed, so a failure reproduces. The default budget keeps `npm run test:unit` quick (the edge cases
// run whatever the budget); CELLA_FUZZ_FULL=1 runs the full 5000 rounds, CELLA_FUZZ_ITERS any count,
// CELLA_FUZZ_SEED another seed.
const SEED = process.env.CELLA_FUZZ_SEED ?? '1';
const ITERS = Number(process.env.CELLA_FUZZ_ITERS ?? (process.env.CELLA_FUZZ_FULL === '1' ? 5000 : 500));

test(
  'cella-init parsers: specs, requests, frames, the control-port reader, agent lines, the kernel command line, passwd/group, /proc, HTTP heads, JSON and inotify records hold under sanitizers',
  { timeout: 300_000, skip: !hasGcc && 'gcc is not installed (Debian package gcc): the guest parser fuzz test is built with it' },
  () => {
    // make rebuilds the binary when cella-init's sources or the fuzzer change, and else keeps it (the
    // sanitizer build is most of this test's cost).
    execFileSync('make', ['-C', GUEST, '--no-print-directory', 'fuzz', `OUT=${FUZZ_BUILD}`], { stdio: 'pipe' });
    const run = spawnSync(join(FUZZ_BUILD, 'fuzz-parsers'), [SEED, String(ITERS)], { encoding: 'utf8', timeout: 240_000 });
    assert.equal(run.status, 0, `fuzz-parsers failed (seed ${SEED}):\n${run.stderr}${run.stdout}`);
    const counts = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;
    // Every parser ran at least its share of the generated inputs (each is also run mutated).
    const minimum: Record<string, number> = {
      spec: 4 * ITERS,
      fixed: 2 * ITERS,
      frames: 2 * ITERS,
      ctl: 2 * Math.floor(ITERS / 20),
      agent: 2 * Math.floor(ITERS / 2),
      cmdline: 2 * ITERS,
      cidr: 2 * ITERS,
      req: 4 * ITERS,
      env: 2 * ITERS,
      files: 4 * ITERS,
      proc: 3 * ITERS,
      http: 2 * ITERS,
      json: 4 * ITERS,
      inotify: 2 * ITERS,
    };
    for (const [name, min] of Object.entries(minimum)) {
      assert.ok((counts[name] ?? 0) >= min, `${name}: ${counts[name]} cases, expected at least ${min}`);
    }
  },
);
