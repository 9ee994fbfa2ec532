/**
 * Terminals and guest -> host signals through cella-init, against real VMs
 * cloned from the demo image. No mocks.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PtyExit, PtySession } from '../src/agent/index.js';
import type { RunningVm } from '../src/engine/index.js';
import { demoEngine, eventually, type DemoEngine } from './helpers.js';

/** Where cella-init puts its client (see docs/design.md, "Guest → host signals"). */
const CELLA = '/run/cella/cella';

let demo: DemoEngine;

before(async () => {
  demo = await demoEngine('sh');
});

after(async () => {
  await demo?.close();
});

const withVm = (fn: (vm: RunningVm) => Promise<void>): Promise<void> => demo.withVm(fn);

/** A terminal's output so far, and its end. */
interface Screen {
  pty: PtySession;
  text: () => string;
  /** Resolves once the output (from `from` on) matches. */
  waitFor: (pattern: string | RegExp, from?: number, ms?: number) => Promise<string>;
  exited: Promise<PtyExit>;
  closed: Promise<unknown>;
}

function screen(pty: PtySession): Screen {
  let out = '';
  pty.on('data', (d: Buffer) => (out += d.toString('latin1')));
  const exited = within(
    (once(pty, 'exit') as Promise<[PtyExit]>).then(([e]) => e),
    30_000,
    `terminal ${pty.id} to exit`,
  );
  const closed = within(once(pty, 'close'), 60_000, `terminal ${pty.id} to close`);
  for (const p of [exited, closed]) p.catch(() => {}); // observed by the tests that await them
  const matches = (s: string, p: string | RegExp): boolean => (typeof p === 'string' ? s.includes(p) : p.test(s));
  return {
    pty,
    text: () => out,
    exited,
    closed,
    waitFor: async (pattern, from = 0, ms = 20_000) => {
      await eventually(() => matches(out.slice(from), pattern), ms, `${String(pattern)} on the terminal; it shows ${JSON.stringify(out.slice(-300))}`);
      return out.slice(from);
    },
  };
}

/** `p`, or a rejection after `ms`: a bound on waiting, not a performance assertion. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Guest processes whose command line matches, from `ps` in the guest. */
async function guestProcesses(vm: RunningVm, pattern: string): Promise<string[]> {
  const r = await vm.agent.exec({ argv: ['/bin/ps', '-o', 'pid,args'] });
  return r.stdout
    .toString()
    .split('\n')
    .filter((l) => l.includes(pattern) && !l.includes('/bin/ps'));
}

/** Waits until a guest process matching `pattern` runs. */
async function running(vm: RunningVm, pattern: string): Promise<void> {
  for (let i = 0; (await guestProcesses(vm, pattern)).length === 0; i++) {
    assert.ok(i < 200, `${pattern} started`);
    await sleep(100);
  }
}

function counter(vm: RunningVm, event: 'activity' | 'suspend-request'): { count: () => number; next: () => Promise<void> } {
  let n = 0;
  vm.agent.on(event, () => n++);
  return { count: () => n, next: () => within(once(vm.agent, event), 15_000, `'${event}' from the guest`).then(() => undefined) };
}

describe('terminals', () => {
  test('a shell on a terminal: output, its size, resize, job control, exit status', async () => {
    await withVm(async (vm) => {
      const s = screen(await vm.agent.openPty({ argv: [], rows: 24, cols: 80 }));
      let mark = s.text().length;
      s.pty.write('echo hi; stty size\r');
      const first = await s.waitFor(/24 80\r\n/, mark);
      assert.match(first, /\r\nhi\r\n/, 'the echo, with the terminal turning \\n into \\r\\n');

      mark = s.text().length;
      s.pty.resize(100, 30);
      s.pty.write('stty size\r');
      await s.waitFor(/30 100\r\n/, mark);

      mark = s.text().length;
      s.pty.write('echo "$TERM:$(tty)"\r');
      await s.waitFor(/xterm-256color:\/dev\/pts\/\d+\r\n/, mark);

      // Job control: ^C reaches the foreground job, not the shell.
      mark = s.text().length;
      s.pty.write('sleep 1000\r');
      await running(vm, 'sleep 1000');
      s.pty.write('\x03');
      s.pty.write('echo "after ^C: $?"\r');
      await s.waitFor('after ^C: 130', mark);
      assert.deepEqual(await guestProcesses(vm, 'sleep 1000'), []);

      s.pty.write('exit 3\r');
      const exit = await s.exited;
      assert.deepEqual(exit, { status: 3 << 8, exitCode: 3, signal: null });
      await s.closed;
      assert.ok(s.pty.closed);
    });
  });

  test('argv, env, cwd and user of a terminal process; its exit status', async () => {
    await withVm(async (vm) => {
      const s = screen(
        await vm.agent.openPty({
          argv: ['/bin/sh', '-c', 'echo "$GREETING $(id -u) $(pwd) $TERM"; stty size; exit 7'],
          env: { GREETING: 'hello', TERM: 'vt100' },
          cwd: '/tmp',
          uid: 65534,
          gid: 65534,
          rows: 50,
          cols: 132,
        }),
      );
      const exit = await s.exited;
      assert.equal(exit.exitCode, 7);
      assert.equal(s.text(), 'hello 65534 /tmp vt100\r\n50 132\r\n');
      const missing = screen(await vm.agent.openPty({ argv: ['/no/such/shell'], rows: 24, cols: 80 }));
      assert.equal((await missing.exited).exitCode, 127);
      assert.match(missing.text(), /exec \/no\/such\/shell/);
    });
  });

  test('two terminals at once are separate', async () => {
    await withVm(async (vm) => {
      const [a, b] = (await Promise.all([vm.agent.openPty({ rows: 24, cols: 80 }), vm.agent.openPty({ rows: 10, cols: 40 })])).map(screen) as [Screen, Screen];
      assert.notEqual(a.pty.id, b.pty.id);
      a.pty.write('A=one; echo "a:$A:$(tty):$(stty size)"\r');
      b.pty.write('echo "b:$A:$(tty):$(stty size)"\r');
      const [ta, tb] = await Promise.all([a.waitFor(/a:one:\/dev\/pts\/\d+:24 80\r\n/), b.waitFor(/b::\/dev\/pts\/\d+:10 40\r\n/)]);
      const ttyOf = (t: string, who: string): string => new RegExp(`${who}:[a-z]*:(/dev/pts/\\d+)`).exec(t)?.[1] ?? '';
      assert.notEqual(ttyOf(ta, 'a'), ttyOf(tb, 'b'));
      assert.ok(!ta.includes('b:') && !tb.includes('a:one'), 'no output crosses over');
      b.pty.write('exit 5\r');
      assert.equal((await b.exited).exitCode, 5);
      a.pty.write('echo still here\r');
      await a.waitFor('still here\r\n');
      a.pty.write('exit\r');
      assert.equal((await a.exited).exitCode, 0);
    });
  });

  test('close() hangs up a session, with SIGKILL for what ignores SIGHUP', async () => {
    await withVm(async (vm) => {
      const s = screen(await vm.agent.openPty({ rows: 24, cols: 80 }));
      s.pty.write('sleep 1000\r');
      await running(vm, 'sleep 1000');
      s.pty.close();
      const exit = await s.exited;
      assert.ok(exit.signal === 1 || exit.exitCode === 129, `the shell ended by SIGHUP: ${JSON.stringify(exit)}`);
      assert.deepEqual(await guestProcesses(vm, 'sleep 1000'), [], 'the foreground job was hung up too');

      const stubborn = screen(await vm.agent.openPty({ argv: ['/bin/sh', '-c', 'trap "" HUP; echo ready; sleep 1001; echo survived'], rows: 24, cols: 80 }));
      await stubborn.waitFor('ready');
      stubborn.pty.close();
      assert.equal((await stubborn.exited).signal, 9, 'SIGKILL after the grace period');
      assert.deepEqual(await guestProcesses(vm, 'sleep 1001'), []);
    });
  });

  test('at most 64 terminals at a time; closeAllPtys ends them all', async () => {
    await withVm(async (vm) => {
      const all = (await Promise.all(Array.from({ length: 64 }, () => vm.agent.openPty({ argv: ['/bin/sleep', '1000'], rows: 24, cols: 80 })))).map(screen);
      await assert.rejects(vm.agent.openPty({ rows: 24, cols: 80 }), /too many terminals/);
      vm.agent.closeAllPtys();
      const exits = await Promise.all(all.map((s) => s.exited));
      assert.deepEqual(
        exits.map((e) => e.signal),
        Array(64).fill(1),
      );
      const again = screen(await vm.agent.openPty({ argv: ['/bin/echo', 'free again'], rows: 24, cols: 80 }));
      assert.equal((await again.exited).exitCode, 0);
      assert.equal(again.text(), 'free again\r\n');
    });
  });

  test('a flood of terminal output arrives whole, even while the host stops reading, and the control port stays responsive', async (t) => {
    await withVm(async (vm) => {
      const lines = 60_000;
      // seq is the terminal's process: what it wrote before exiting must still all arrive.
      const t0 = Date.now();
      const s = screen(await vm.agent.openPty({ argv: ['/bin/seq', '1', String(lines)], rows: 24, cols: 80 }));
      // The host stops reading the control port for a while: the guest queues, then holds the terminal back.
      const socket = (vm.agent as unknown as { socket: net.Socket }).socket;
      await eventually(() => s.text().length > 1000, 20_000, 'output to start');
      socket.pause();
      await sleep(1500);
      socket.resume();
      // Meanwhile-answered requests: the flood does not starve the control port.
      const started = Date.now();
      for (let i = 0; i < 5; i++) await vm.agent.ping(10_000);
      const r = await vm.agent.exec({ argv: ['/bin/echo', 'alongside'] }, { timeoutMs: 20_000 });
      assert.equal(r.stdout.toString(), 'alongside\n');
      assert.ok(Date.now() - started < 20_000);
      const exit = await s.exited;
      assert.equal(exit.exitCode, 0);
      t.diagnostic(`${s.text().length} bytes of terminal output in ${Date.now() - t0} ms`);
      const got = s.text().split('\r\n').filter(Boolean);
      assert.equal(got.length, lines, 'no line lost');
      assert.ok(
        got.every((l, i) => l === String(i + 1)),
        'in order',
      );
    });
  });

  test("a suspend ends the host's handle on a terminal; the terminal runs on in the guest until closeAllPtys", async () => {
    const vm = await demo.engine.launch(demo.imageDir, demo.nextId());
    let back: RunningVm | undefined;
    try {
      const s = screen(await vm.agent.openPty({ argv: ['/bin/sh', '-c', 'echo up; exec sleep 1002'], rows: 24, cols: 80 }));
      await s.waitFor('up');
      await demo.engine.suspend(vm);
      await s.closed;
      assert.equal(s.pty.exitStatus, undefined);
      back = await demo.engine.resume(vm.ref);
      // A new connection's terminals work; what an earlier one left runs on, detached (protocol 3), until hung up.
      const fresh = screen(await back.agent.openPty({ argv: ['/bin/echo', 'resumed'], rows: 24, cols: 80 }));
      assert.equal((await fresh.exited).exitCode, 0);
      assert.equal((await guestProcesses(back, 'sleep 1002')).length, 1, 'the old session still runs');
      back.agent.closeAllPtys();
      for (let i = 0; (await guestProcesses(back, 'sleep 1002')).length > 0; i++) {
        assert.ok(i < 50, 'the old session was hung up');
        await sleep(100);
      }
      await back.agent.ping();
    } finally {
      await demo.engine.terminate((back ?? vm).ref);
    }
  });
});

describe('guest -> host signals', () => {
  test('`cella activity` and `cella suspend` from inside the guest become events, rate-limited', async () => {
    await withVm(async (vm) => {
      const activity = counter(vm, 'activity');
      const suspend = counter(vm, 'suspend-request');
      const first = activity.next();
      const r = await vm.agent.exec({ argv: [CELLA, 'activity'] });
      assert.equal(r.exitCode, 0, r.stderr.toString());
      await first;
      assert.equal(suspend.count(), 0);

      // Any user may ask; the request goes through the socket, not a privilege.
      const asked = suspend.next();
      const s = await vm.agent.exec({ argv: [CELLA, 'suspend'], uid: 65534, gid: 65534 });
      assert.equal(s.exitCode, 0, s.stderr.toString());
      await asked;

      // A burst becomes at most one frame a second.
      const before = activity.count();
      const t0 = Date.now();
      const burst = await vm.agent.exec({ argv: ['/bin/sh', '-c', `for i in $(seq 30); do ${CELLA} activity || exit 1; done`] });
      const seconds = (Date.now() - t0) / 1000;
      assert.equal(burst.exitCode, 0, burst.stderr.toString());
      await sleep(300);
      const got = activity.count() - before;
      assert.ok(got <= Math.ceil(seconds) + 1, `${got} activity events for 30 requests in ${seconds} s`);

      // Plain socket clients work too, lines from stdin.
      await sleep(1100);
      const viaStdin = activity.next();
      const piped = await vm.agent.exec({ argv: [CELLA, '-'], stdin: Buffer.from('activity\n') });
      assert.equal(piped.stdout.toString(), 'ok\n');
      await viaStdin;

      const usage = await vm.agent.exec({ argv: [CELLA] });
      assert.equal(usage.exitCode, 2);
      assert.match(usage.stderr.toString(), /usage: cella activity\|suspend/);
    });
  });

  test('garbage on the signal socket causes no event and no harm', async () => {
    await withVm(async (vm) => {
      const activity = counter(vm, 'activity');
      const suspend = counter(vm, 'suspend-request');
      const junk = Buffer.concat([
        Buffer.from('ACTIVITY\nactivityx\n activity\nsuspend now\nsuspend\0\n\0activity\n'),
        Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0x80, 0x0a]),
        Buffer.from(`${'a'.repeat(5000)}\n`),
      ]);
      const r = await vm.agent.exec({ argv: [CELLA, '-'], stdin: junk });
      assert.equal(r.exitCode, 1);
      assert.match(r.stdout.toString(), /error: unknown request/);
      assert.match(r.stdout.toString(), /error: line too long/);
      assert.doesNotMatch(r.stdout.toString(), /^ok$/m);
      // Many clients at once, random bytes, and idle ones holding connections.
      const flood = await vm.agent.exec(
        {
          argv: [
            '/bin/sh',
            '-c',
            `for i in $(seq 12); do (sleep 30 | ${CELLA} -) >/dev/null 2>&1 & done
           pids=
           for i in $(seq 10); do (head -c 20000 /dev/urandom | tr -d '\\n' | ${CELLA} -) >/dev/null 2>&1 & pids="$pids $!"; done
           wait $pids; echo done`,
          ],
        },
        { timeoutMs: 60_000 },
      );
      assert.match(flood.stdout.toString(), /done/);
      await sleep(1200);
      assert.equal(activity.count() + suspend.count(), 0, 'no event from garbage');

      // cella-init is fine, and a proper request still gets through past the idle connections.
      await vm.agent.ping();
      const ok = activity.next();
      const again = await vm.agent.exec({ argv: [CELLA, 'activity'] });
      assert.equal(again.exitCode, 0, again.stderr.toString());
      await ok;
      await vm.agent.exec({ argv: ['/bin/sh', '-c', 'kill $(pidof sleep) 2>/dev/null; true'] });
      const s = screen(await vm.agent.openPty({ argv: ['/bin/echo', 'still serving'], rows: 24, cols: 80 }));
      assert.equal((await s.exited).exitCode, 0);
    });
  });
});
