import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QEMU_GLIBC_TUNABLES, QemuProcess, qemuEnv } from './process.js';

// cella-spawn (guest/host/spawn.c) is the prelude of every QEMU: it must run each step or run nothing.
const GUEST = fileURLToPath(new URL('../../guest', import.meta.url));
/** The repository's own build folder (ignored by git), kept between runs. */
const BUILD = fileURLToPath(new URL('../../.cella-build/spawn', import.meta.url));
const SPAWN = join(BUILD, 'cella-spawn');
const hasGcc = !spawnSync('gcc', ['--version']).error;
const skip = !hasGcc && 'gcc is not installed (Debian package gcc): cella-spawn is built with it here';

function build(): void {
  execFileSync('make', ['-C', GUEST, '--no-print-directory', 'CC=gcc', `OUT=${BUILD}`, SPAWN, 'spawn-test'], { stdio: 'pipe' });
}

test('cella-spawn: its argument parser holds on edge cases and random input under sanitizers', { timeout: 120_000, skip }, () => {
  build();
  const run = spawnSync(join(BUILD, 'spawn-args-test'), ['1', '2000'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `spawn-args-test failed:\n${run.stderr}${run.stdout}`);
  assert.deepEqual(JSON.parse(run.stdout.trim()), { cases: 2000, failures: 0 });
});

test('cella-spawn: becomes PROGRAM (same pid, stdin /dev/null) after writing its pid to each --join file', { timeout: 60_000, skip }, () => {
  build();
  const dir = mkdtempSync(join(tmpdir(), 'cella-spawn-'));
  try {
    const files = [join(dir, 'a.procs'), join(dir, 'b.procs')];
    for (const f of files) writeFileSync(f, '');
    const out = execFileSync(SPAWN, ['--join', files[0] as string, '--join', files[1] as string, '--', '/bin/sh', '-c', 'echo $$; readlink /proc/$$/fd/0'], {
      encoding: 'utf8',
    });
    const [pid, stdin] = out.trim().split('\n');
    for (const f of files) assert.equal(readFileSync(f, 'utf8'), `${pid}\n`);
    assert.equal(stdin, '/dev/null');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cella-spawn: a step that fails, or a bad command line, runs nothing (status 125)', { timeout: 60_000, skip }, () => {
  build();
  const dir = mkdtempSync(join(tmpdir(), 'cella-spawn-'));
  try {
    const marker = join(dir, 'ran');
    const program = ['--', '/bin/sh', '-c', `touch ${marker}`];
    const notNetns = join(dir, 'plain-file');
    writeFileSync(notNetns, '');
    for (const [args, says] of [
      [['--join', join(dir, 'missing', 'cgroup.procs'), ...program], 'join'],
      [['--netns', notNetns, ...program], 'setns'],
      [['--netns', 'relative', ...program], '--netns needs an absolute PATH'],
      [['--bogus', ...program], 'unknown option'],
      [['--', 'sh', '-c', `touch ${marker}`], 'absolute PROGRAM'],
    ] as const) {
      const run = spawnSync(SPAWN, [...args], { encoding: 'utf8' });
      assert.equal(run.status, 125, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, new RegExp(says.replace(/[-/]/g, '\\$&')));
      assert.equal(existsSync(marker), false, `${args.join(' ')} ran PROGRAM`);
    }
    const missing = spawnSync(SPAWN, ['--', join(dir, 'no-such-program')], { encoding: 'utf8' });
    assert.equal(missing.status, 127);
    assert.match(missing.stderr, /exec/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cella-spawn --watch: PROGRAM is killed when its parent closes the stdin pipe (the parent died)', { timeout: 60_000, skip }, async () => {
  build();
  const child = spawn(SPAWN, ['--pdeathsig', '--watch', '--', '/bin/sleep', '30'], { stdio: ['pipe', 'ignore', 'pipe'] });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  // PROGRAM runs (sleep is in place) before the pipe closes.
  for (let i = 0; i < 200 && !readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').startsWith('/bin/sleep'); i++) await new Promise((r) => setTimeout(r, 10));
  assert.match(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8'), /^\/bin\/sleep/);
  // The watcher (PROGRAM's child) does not carry PROGRAM's command line: it must not pass for a QEMU.
  const [watcher] = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ');
  const watcherArgs = (): string[] => readFileSync(`/proc/${watcher}/cmdline`, 'utf8').split('\0').filter(Boolean);
  // It renames itself right after the fork, which may still be under way.
  for (let i = 0; i < 200 && watcherArgs().length !== 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(watcherArgs(), ['cella-spawn', 'watch']);
  child.stdin.end();
  assert.equal(await exited, 'SIGKILL');
});

test('QEMU runs with the malloc tunable, added to any the caller set', { timeout: 60_000, skip }, async () => {
  assert.equal(qemuEnv({ PATH: '/bin' }).GLIBC_TUNABLES, QEMU_GLIBC_TUNABLES);
  assert.equal(qemuEnv({ GLIBC_TUNABLES: 'glibc.rtld.optional_static_tls=512' }).GLIBC_TUNABLES, `glibc.rtld.optional_static_tls=512:${QEMU_GLIBC_TUNABLES}`);
  // Through the real prelude: what the exec'd program (a stand-in for QEMU) really has.
  build();
  const proc = QemuProcess.spawn(['30'], { spawner: SPAWN, binary: '/bin/sleep' });
  try {
    const environ = (): string[] => readFileSync(`/proc/${proc.pid}/environ`, 'utf8').split('\0');
    for (let i = 0; i < 200 && !readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').startsWith('/bin/sleep'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(environ().includes(`GLIBC_TUNABLES=${QEMU_GLIBC_TUNABLES}`), environ().join(' '));
  } finally {
    await proc.kill();
  }
});
