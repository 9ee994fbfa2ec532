import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { isCellaError } from '../contract/index.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QemuProcess } from './process.js';
import { QEMU_GLIBC_TUNABLES, SpawnServer, qemuEnv } from './spawn-server.js';

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

test('cella-spawn: its argument and request parsers hold on edge cases and random input under sanitizers', { timeout: 120_000, skip }, () => {
  build();
  const run = spawnSync(join(BUILD, 'spawn-args-test'), ['1', '2000'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `spawn-args-test failed:\n${run.stderr}${run.stdout}`);
  assert.deepEqual(JSON.parse(run.stdout.trim()), { cases: 2000, failures: 0 });
});

test('spawn server: random and malformed requests, under sanitizers, get an error each and leave it serving', { timeout: 120_000, skip }, async () => {
  build();
  // The whole server built with ASan/UBSan (dynamic, so not the static binary cellad runs).
  const server = spawn(join(BUILD, 'cella-spawn-asan'), ['--serve'], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  server.stderr.setEncoding('utf8');
  server.stderr.on('data', (s: string) => (stderr += s));
  const replies: string[][] = [];
  let input = Buffer.alloc(0);
  server.stdout.on('data', (chunk: Buffer) => {
    input = Buffer.concat([input, chunk]);
    while (input.length >= 4 && input.length >= 4 + input.readUInt32LE(0)) {
      replies.push(
        input
          .subarray(4, 4 + input.readUInt32LE(0))
          .toString('latin1')
          .split('\0'),
      );
      input = input.subarray(4 + input.readUInt32LE(0));
    }
  });
  const frame = (payload: Buffer): Buffer => Buffer.concat([Buffer.from(Uint32Array.of(payload.length).buffer), payload]);
  const words = ['spawn', '1', '--', '/bin/true', '--stderr', '--setsid', '--join', 'rel', '', '--netns', '--watch', 'x'];
  let seed = 7;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) >> 8) % n;
  const N = 500;
  const frames: Buffer[] = [];
  for (let i = 0; i < N; i++) {
    const parts = Array.from({ length: rand(8) }, () => (rand(6) ? Buffer.from(`${words[rand(words.length)]}\0`) : Buffer.from([rand(256), rand(256)])));
    // Never a well-formed spawn: each must be refused, and nothing started.
    frames.push(frame(Buffer.concat([Buffer.from(rand(2) ? 'spawn\0x\0' : 'spawn'), ...parts])));
  }
  // Then a real one, whose stderr overflows the tail the server keeps.
  frames.push(frame(Buffer.from(['spawn', '77', '--', '/bin/sh', '-c', 'head -c 10000 /dev/zero | tr "\\0" a >&2; echo end >&2; exit 7', ''].join('\0'))));
  // Written in pieces that split frames anywhere.
  const all = Buffer.concat(frames);
  for (let at = 0; at < all.length;) {
    const n = 1 + rand(300);
    server.stdin.write(all.subarray(at, at + n));
    at += n;
  }
  for (let i = 0; i < 500 && !replies.some((r) => r[0] === 'exit'); i++) await sleep(20);
  server.stdin.end();
  const code = await new Promise<number | null>((resolve) => server.once('exit', resolve));
  assert.equal(code, 0, stderr);
  assert.equal(stderr, '');
  assert.equal(replies.filter((r) => r[0] === 'err').length, N, 'each malformed request refused');
  const ok = replies.find((r) => r[0] === 'ok');
  const exit = replies.find((r) => r[0] === 'exit');
  assert.equal(ok?.[1], '77');
  assert.deepEqual(exit?.slice(1, 4), [ok?.[2], '7', '']);
  const tail = exit?.slice(4).join('\0') ?? '';
  assert.equal(tail.length, 4096);
  assert.match(tail, /^a+end\n$/);
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

/** Runs `fn` with a spawn server of the freshly built cella-spawn, closed after. */
async function withServer(fn: (server: SpawnServer) => Promise<void>): Promise<void> {
  build();
  const server = new SpawnServer(SPAWN);
  try {
    await fn(server);
  } finally {
    server.close();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until process `pid` runs `program` (the prelude has exec'd). */
async function until(pid: number, program: string): Promise<void> {
  for (let i = 0; i < 300 && !readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(program); i++) await sleep(10);
  assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), new RegExp(`^${program}`));
}

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

test('QEMU runs with the malloc tunable, added to any the caller set', { timeout: 60_000, skip }, async () => {
  assert.equal(qemuEnv({ PATH: '/bin' }).GLIBC_TUNABLES, QEMU_GLIBC_TUNABLES);
  assert.equal(qemuEnv({ GLIBC_TUNABLES: 'glibc.rtld.optional_static_tls=512' }).GLIBC_TUNABLES, `glibc.rtld.optional_static_tls=512:${QEMU_GLIBC_TUNABLES}`);
  // Through the real server and prelude: what the exec'd program (a stand-in for QEMU) really has.
  await withServer(async (spawner) => {
    const proc = await QemuProcess.spawn(['30'], { spawner, binary: '/bin/sleep' });
    try {
      await until(proc.pid, '/bin/sleep');
      const environ = readFileSync(`/proc/${proc.pid}/environ`, 'utf8').split('\0');
      assert.ok(environ.includes(`GLIBC_TUNABLES=${QEMU_GLIBC_TUNABLES}`), environ.join(' '));
      assert.equal(readlinkSync(`/proc/${proc.pid}/fd/0`), '/dev/null');
    } finally {
      await proc.kill();
    }
    assert.equal(proc.exit?.signal, 'SIGKILL');
  });
});

test('spawn server: reports the exit code and the tail of stderr, and a prelude that fails as 125 with its reason', { timeout: 60_000, skip }, async () => {
  await withServer(async (spawner) => {
    const proc = await QemuProcess.spawn(['-c', 'echo one >&2; echo the reason >&2; exit 3'], { spawner, binary: '/bin/sh' });
    const exit = await proc.waitExit();
    assert.deepEqual(exit, { code: 3, signal: null, stderr: 'one\nthe reason' });
    assert.equal(proc.describeExit(), 'QEMU exited with code 3: one\nthe reason');
    // A join that fails: nothing runs, and the message says which step.
    const dir = mkdtempSync(join(tmpdir(), 'cella-spawn-'));
    try {
      const marker = join(dir, 'ran');
      const cgroup = { procsFiles: [join(dir, 'missing', 'cgroup.procs')], remove: async () => {} };
      const failed = await QemuProcess.spawn(['-c', `touch ${marker}`], { spawner, binary: '/bin/sh', cgroup: cgroup as never });
      const e = await failed.waitExit();
      assert.equal(e.code, 125);
      assert.match(e.stderr, /cella-spawn: join .*missing\/cgroup.procs/);
      assert.equal(existsSync(marker), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // A request the server refuses (a relative program) starts nothing and says why.
    await assert.rejects(spawner.spawn(['--', 'sh'], false), (e) => isCellaError(e, 'QEMU_FAILED') && /absolute PROGRAM/.test(e.message));
    // More starts at once than one read of the server's input holds.
    const many = await Promise.all(Array.from({ length: 40 }, (_, i) => QemuProcess.spawn(['-c', `exit ${i}`], { spawner, binary: '/bin/sh' })));
    assert.deepEqual(
      (await Promise.all(many.map((p) => p.waitExit()))).map((e) => e.code),
      many.map((_, i) => i),
    );
  });
});

test('spawn server: an outliveParent QEMU has its own session, appends stderr to its file and outlives the server', { timeout: 60_000, skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cella-spawn-'));
  const log = join(dir, 'qemu.log');
  writeFileSync(log, 'earlier\n');
  let proc: QemuProcess | undefined;
  try {
    await withServer(async (spawner) => {
      proc = await QemuProcess.spawn(['-c', 'echo started >&2; exec sleep 30'], { spawner, binary: '/bin/sh', outliveParent: { stderrFile: log } });
      await until(proc.pid, 'sleep');
      const stat = readFileSync(`/proc/${proc.pid}/stat`, 'utf8');
      const [, , , sid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      assert.equal(Number(sid), proc.pid, 'its own session');
      assert.equal(readFileSync(log, 'utf8'), 'earlier\nstarted\n');
      process.kill(spawner.pid ?? 0, 'SIGKILL');
      for (let i = 0; i < 100 && spawner.pid !== undefined; i++) await sleep(20);
      assert.equal(spawner.pid, undefined, 'the server is gone');
      assert.ok(alive(proc.pid), 'QEMU runs on');
      // Its end is found as for an adopted QEMU.
      const exit = await proc.kill();
      assert.deepEqual(exit, { code: null, signal: null, stderr: 'earlier\nstarted' });
      // The next start gets a new server.
      const next = await QemuProcess.spawn(['-c', 'exit 4'], { spawner, binary: '/bin/sh' });
      assert.equal((await next.waitExit()).code, 4);
    });
  } finally {
    if (proc?.alive) await proc.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spawn server: a server that dies fails the spawns it was asked for, saying why; an old one asks for setup', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cella-spawn-'));
  const fake = async (script: string): Promise<unknown> => {
    const bin = join(dir, `server-${script.length}`);
    writeFileSync(bin, `#!/bin/sh\n${script}\n`, { mode: 0o755 });
    const spawner = new SpawnServer(bin);
    try {
      return await QemuProcess.spawn(['30'], { spawner, binary: '/bin/sleep' }).then(
        () => assert.fail('spawned'),
        (e: unknown) => e,
      );
    } finally {
      spawner.close();
    }
  };
  try {
    const died = await fake('head -c 1 >/dev/null; echo "out of memory" >&2; exit 3');
    assert.ok(isCellaError(died, 'QEMU_FAILED'), String(died));
    assert.match(died.message, /spawn server .*exited with code 3: out of memory/);
    // What a cella-spawn from before the server does with `--serve`: usage on stderr, status 125.
    const old = await fake('echo "cella-spawn: unknown option" >&2; exit 125');
    assert.ok(isCellaError(old, 'SETUP_MISSING') && old.message.includes('--serve'), String(old));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spawn server: when cellad dies, the server and watched QEMUs die with it, outliveParent ones run on', { timeout: 60_000, skip }, async () => {
  build();
  const dir = mkdtempSync(join(tmpdir(), 'cella-spawn-'));
  const script = join(dir, 'cellad.mts');
  // A stand-in cellad: starts a server, a watched and an outliving "QEMU", prints the pids, waits to be killed.
  writeFileSync(
    script,
    `import { QemuProcess } from ${JSON.stringify(fileURLToPath(new URL('./process.ts', import.meta.url)))};
import { SpawnServer } from ${JSON.stringify(fileURLToPath(new URL('./spawn-server.ts', import.meta.url)))};
const spawner = new SpawnServer(${JSON.stringify(SPAWN)});
const watched = await QemuProcess.spawn(['300'], { spawner, binary: '/bin/sleep' });
const outliving = await QemuProcess.spawn(['300'], { spawner, binary: '/bin/sleep', outliveParent: { stderrFile: ${JSON.stringify(join(dir, 'log'))} } });
console.log(JSON.stringify({ server: spawner.pid, watched: watched.pid, outliving: outliving.pid }));
setInterval(() => {}, 1000);
`,
  );
  const cellad = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let pids: { server: number; watched: number; outliving: number } | undefined;
  try {
    const line = await new Promise<string>((resolve, reject) => {
      cellad.stdout.setEncoding('utf8');
      cellad.stdout.once('data', resolve);
      cellad.once('exit', () => reject(new Error('the stand-in cellad ended')));
    });
    pids = JSON.parse(line) as { server: number; watched: number; outliving: number };
    await until(pids.watched, '/bin/sleep');
    await until(pids.outliving, '/bin/sleep');
    cellad.kill('SIGKILL');
    const p = pids;
    for (let i = 0; i < 200 && (alive(p.server) || alive(p.watched)); i++) await sleep(20);
    assert.equal(alive(pids.server), false, 'the server died with cellad');
    assert.equal(alive(pids.watched), false, 'the watched QEMU died with cellad');
    assert.equal(alive(pids.outliving), true, 'the outliving QEMU runs on');
  } finally {
    cellad.kill('SIGKILL');
    for (const pid of [pids?.watched, pids?.outliving]) if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
