/**
 * cella-init protocol 3 against real VMs cloned from the demo image (busybox):
 * processes with pids, streamed stdin and signals, users and groups, the
 * sandbox's environment and its envs listener, files, watches, usage
 * figures, limits, and processes and terminals that outlive the host
 * connection (a reconnect, a suspend and resume). No mocks.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, Msg, Tag, tlv, type ExecProcess, type ExitStatus, type PtySession } from '../src/agent/index.js';
import { isCellaError } from '../src/contract/index.js';
import { vmFiles, type RunningVm } from '../src/engine/index.js';
import { demoEngine, eventually, type DemoEngine } from './helpers.js';

let demo: DemoEngine;
const T = { timeout: 180_000 };

before(async () => {
  demo = await demoEngine('v3');
});

after(async () => {
  await demo?.close();
});

const withVm = (fn: (vm: RunningVm) => Promise<void>): Promise<void> => demo.withVm(fn);

/** A handle's output so far and its exit. */
function collect(p: ExecProcess | PtySession): { text: () => string; exit: Promise<ExitStatus> } {
  let out = '';
  const add = (d: Buffer): void => void (out += d.toString('latin1'));
  p.on('stdout', add);
  p.on('stderr', add);
  p.on('data', add);
  const exit = (once(p, 'exit') as Promise<[ExitStatus]>).then(([e]) => e);
  exit.catch(() => {});
  return { text: () => out, exit };
}

const sh = (script: string): { argv: string[] } => ({ argv: ['/bin/sh', '-c', script] });

async function run(agent: AgentClient, script: string, extra: object = {}): Promise<string> {
  const r = await agent.exec({ ...sh(script), ...extra }, { timeoutMs: 60_000 });
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** A user `user` (1000) in groups user (1000) and extra (2000), as an E2B-style template has one. */
async function addUser(agent: AgentClient): Promise<void> {
  await run(
    agent,
    `echo 'user:x:1000:1000::/home/user:/bin/sh' >> /etc/passwd; echo 'user:x:1000:' >> /etc/group;
    echo 'extra:x:2000:root,user' >> /etc/group; mkdir -p /home/user; chown 1000:1000 /home/user`,
  );
}

describe('processes', () => {
  test('the guest speaks protocol 3; spawn reports the pid; output, exit codes and signals', T, async () => {
    await withVm(async (vm) => {
      assert.equal(await vm.agent.protocolVersion(), 3);
      const p = await vm.agent.spawn(sh('echo out; echo err >&2; exit 3'));
      const c = collect(p);
      assert.ok(p.pid !== undefined && p.pid > 1);
      assert.equal((await c.exit).exitCode, 3);
      assert.equal(c.text().split('\n').sort().join(','), ',err,out');

      const s = await vm.agent.spawn({ argv: ['/bin/sleep', '1000'] });
      const sc = collect(s);
      assert.equal((await run(vm.agent, `cat /proc/${s.pid}/cmdline | tr '\\0' ' '`)).trim(), '/bin/sleep 1000', 'the pid is the guest pid');
      await s.signal(15);
      assert.deepEqual(await sc.exit, { status: 15, exitCode: null, signal: 15 });
      await assert.rejects(s.kill(), (e: unknown) => isCellaError(e, 'NOT_FOUND'));
    });
  });

  test('stdin streams in pieces larger than the window and closes to EOF; a closed pipe is EPIPE', T, async () => {
    await withVm(async (vm) => {
      const p = await vm.agent.spawn({ argv: ['/bin/sh', '-c', 'sha256sum; wc -c < /dev/null'], stdin: Buffer.from('first ') }, { stdin: 'pipe' });
      const c = collect(p);
      const data = randomBytes(1 << 20);
      for (let off = 0; off < data.length; off += 100_000) await p.write(data.subarray(off, off + 100_000));
      await p.closeStdin();
      assert.equal((await c.exit).exitCode, 0);
      const want = createHash('sha256')
        .update(Buffer.concat([Buffer.from('first '), data]))
        .digest('hex');
      assert.equal(c.text().split(' ')[0], want, 'every byte, in order');

      const head = await vm.agent.spawn({ argv: ['/bin/head', '-c', '3'] }, { stdin: 'pipe' });
      const hc = collect(head);
      await head.write('abcdef\n');
      await hc.exit;
      assert.equal(hc.text(), 'abc');
      await assert.rejects(
        (async () => {
          for (let i = 0; i < 100; i++) await head.write(Buffer.alloc(65536));
        })(),
        (e: unknown) => isCellaError(e) && (e.details.errno === 'EPIPE' || e.details.errno === 'ESRCH'),
      );
    });
  });

  test('at most 256 processes at a time; QUOTA_EXCEEDED beyond, and room again once they end', T, async () => {
    await withVm(async (vm) => {
      const all: ExecProcess[] = [];
      for (let i = 0; i < 256; i++) all.push(await vm.agent.spawn({ argv: ['/bin/sleep', '1000'] }));
      await assert.rejects(vm.agent.spawn({ argv: ['/bin/true'] }), (e: unknown) => isCellaError(e, 'QUOTA_EXCEEDED'));
      const exits = all.map((p) => collect(p).exit);
      await Promise.all(all.map((p) => p.kill()));
      await Promise.all(exits);
      assert.equal((await run(vm.agent, 'echo free')).trim(), 'free', 'ended processes make room (oldest ended first)');
    });
  });

  test('users: USER_LOOKUP reads /etc/passwd and /etc/group; a uid gets its groups unless the spec names them', T, async () => {
    await withVm(async (vm) => {
      await addUser(vm.agent);
      assert.deepEqual(await vm.agent.lookupUser('user'), { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/sh', groups: [1000, 2000] });
      assert.equal((await vm.agent.lookupUser(0)).name, 'root');
      await assert.rejects(vm.agent.lookupUser('nobody-here'), (e: unknown) => isCellaError(e, 'NOT_FOUND'));
      assert.equal((await run(vm.agent, 'id -u; id -g; id -G', { uid: 1000 })).trim(), '1000\n1000\n1000 2000');
      assert.equal((await run(vm.agent, 'id -G', { uid: 1000, gid: 1000, groups: [1000, 3000] })).trim(), '1000 3000');
      assert.equal((await run(vm.agent, 'id -G', { uid: 65534, gid: 65534 })).trim(), '65534', 'a user in no group file line: only its own group');
      const pty = collect(await vm.agent.openPty({ argv: ['/bin/sh', '-c', 'id -G'], uid: 1000, rows: 24, cols: 80 }));
      await pty.exit;
      assert.equal(pty.text().trim(), '1000 2000');
    });
  });

  test('the sandbox environment reaches later processes under their own; the envs listener answers inside the guest', T, async () => {
    await withVm(async (vm) => {
      await vm.agent.setEnv({ A: 'one', SHARED: 'global', ODD: 'quote " back \\ nl\n tab\t é' });
      assert.equal((await run(vm.agent, 'echo "$A $SHARED"', { env: { SHARED: 'mine', PATH: '/bin' } })).trim(), 'one mine');
      await vm.agent.startEnvdListener();
      await vm.agent.startEnvdListener(); // a second start changes nothing
      const envs = await run(vm.agent, 'wget -qO- http://127.0.0.1:49983/envs');
      assert.deepEqual(JSON.parse(envs), { A: 'one', SHARED: 'global', ODD: 'quote " back \\ nl\n tab\t é' });
      assert.match(await run(vm.agent, 'wget -S -O /dev/null http://127.0.0.1:49983/health 2>&1; true'), /HTTP\/1\.1 204/);
      assert.match(await run(vm.agent, 'wget -S -O /dev/null http://127.0.0.1:49983/nope 2>&1; true'), /404/);
      // Garbage, a head too large and a client that never finishes harm nothing.
      const garbage = await run(vm.agent, `printf 'NOT HTTP\\r\\n\\r\\n' | nc 127.0.0.1 49983; head -c 9000 /dev/zero | tr '\\0' a | nc 127.0.0.1 49983; true`);
      assert.match(garbage, /400 Bad Request/);
      assert.match(garbage, /431/);
      await vm.agent.spawn(sh('sleep 1000 | nc 127.0.0.1 49983'));
      await vm.agent.setEnv({});
      assert.equal((await run(vm.agent, 'wget -qO- http://127.0.0.1:49983/envs')).trim(), '{}');
      await vm.agent.ping();
    });
  });
});

describe('bad input', () => {
  test('malformed requests are refused with the errno that says so, and change nothing', T, async () => {
    await withVm(async (vm) => {
      const garbage = Buffer.from([Tag.PATH, 0xff, 0xff, 0xff, 0x7f, 1, 2]);
      const withNul = Buffer.concat([tlv(Tag.PATH, Buffer.from('/etc\0/passwd'))]);
      const cases: [string, number, Buffer, number, string][] = [
        ['exec: a spec cut short', Msg.EXEC, garbage, vm.agent.allocId(), 'EINVAL'],
        ['exec: no argv', Msg.EXEC, tlv(Tag.CWD, Buffer.from('/')), vm.agent.allocId(), 'EINVAL'],
        ['close stdin of nothing', Msg.EXEC_CLOSE_IN, Buffer.alloc(0), 987_654, 'ESRCH'],
        ['attach nothing', Msg.ATTACH, Buffer.alloc(0), 987_655, 'ENOENT'],
        ['signal 65', Msg.SIGNAL, Buffer.from([65, 0, 0, 0]), 987_656, 'EINVAL'],
        ['user lookup of garbage', Msg.USER_LOOKUP, garbage, vm.agent.allocId(), 'EINVAL'],
        ['stat with a NUL in the path', Msg.FS_STAT, withNul, vm.agent.allocId(), 'EINVAL'],
        ['list of garbage', Msg.FS_LIST, garbage, vm.agent.allocId(), 'EINVAL'],
        ['mkdir without a path', Msg.FS_MKDIR, tlv(Tag.UID, Buffer.alloc(4)), vm.agent.allocId(), 'EINVAL'],
        ['rename without a destination', Msg.FS_RENAME, tlv(Tag.PATH, Buffer.from('/etc/passwd')), vm.agent.allocId(), 'EINVAL'],
        [
          'remove with an unknown tag',
          Msg.FS_REMOVE,
          Buffer.concat([tlv(Tag.PATH, Buffer.from('/etc')), tlv(200, Buffer.alloc(1))]),
          vm.agent.allocId(),
          'EINVAL',
        ],
        [
          'read with a short credit',
          Msg.FS_READ,
          Buffer.concat([tlv(Tag.PATH, Buffer.from('/etc/passwd')), tlv(Tag.CREDIT, Buffer.alloc(2))]),
          vm.agent.allocId(),
          'EINVAL',
        ],
        [
          'write with an attribute without a name',
          Msg.FS_WRITE_OPEN,
          Buffer.concat([tlv(Tag.PATH, Buffer.from('/etc/passwd')), tlv(Tag.XATTR, Buffer.from('\0v'))]),
          vm.agent.allocId(),
          'EINVAL',
        ],
        ['close of no write', Msg.FS_WRITE_CLOSE, Buffer.alloc(0), 987_657, 'EBADF'],
        ['watch of garbage', Msg.FS_WATCH, garbage, vm.agent.allocId(), 'EINVAL'],
        ['unwatch of nothing', Msg.FS_UNWATCH, Buffer.alloc(0), 987_658, 'ENOENT'],
        ['environment without =', Msg.SET_ENV, tlv(Tag.ENV, Buffer.from('NOEQUALS')), vm.agent.allocId(), 'EINVAL'],
        ['listener on a 3-byte port', Msg.ENVD_LISTEN, Buffer.alloc(3), vm.agent.allocId(), 'EINVAL'],
      ];
      const passwd = await vm.agent.fs.readFile('/etc/passwd');
      for (const [what, type, body, id, errno] of cases) {
        await assert.rejects(vm.agent.request(type, body, { id, what }), (e: unknown) => isCellaError(e) && e.details.errno === errno, what);
      }
      assert.ok((await vm.agent.fs.readFile('/etc/passwd')).equals(passwd), '/etc/passwd untouched');
      await assert.rejects(vm.agent.fs.stat('/etc/passwd/x'), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && e.details.errno === 'ENOTDIR');
      assert.deepEqual(await vm.agent.listProcesses(), []);
      await vm.agent.ping();
    });
  });
});

describe('files', () => {
  test('stat, mkdir, rename and remove behave as envd does; errors carry the errno', T, async () => {
    await withVm(async (vm) => {
      const fs = vm.agent.fs;
      await addUser(vm.agent);
      await fs.mkdir('/home/user/a/b/c', { uid: 1000, gid: 1000 });
      for (const d of ['/home/user/a', '/home/user/a/b', '/home/user/a/b/c']) {
        const e = await fs.stat(d);
        assert.deepEqual([e.type, e.uid, e.owner, e.group, e.mode & 0o777], ['directory', 1000, 'user', 'user', 0o755], d);
      }
      await assert.rejects(fs.mkdir('/home/user/a'), (e: unknown) => isCellaError(e, 'ALREADY_EXISTS') && e.details.errno === 'EEXIST');
      await fs.write('/home/user/a/file', 'hello');
      await assert.rejects(fs.mkdir('/home/user/a/file'), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && e.details.errno === 'ENOTDIR');
      await assert.rejects(fs.stat('/nope'), (e: unknown) => isCellaError(e, 'NOT_FOUND') && e.details.errno === 'ENOENT');
      assert.equal(await fs.exists('/nope'), false);
      assert.equal(await fs.exists('/home/user/a/file'), true);

      await run(vm.agent, 'ln -s /home/user/a/file /home/user/link; ln -s /missing /home/user/broken');
      const link = await fs.stat('/home/user/link');
      assert.deepEqual([link.type, link.targetType, link.symlinkTarget], ['symlink', 'file', '/home/user/a/file']);
      const broken = await fs.stat('/home/user/broken');
      assert.deepEqual([broken.type, broken.targetType, broken.symlinkTarget], ['symlink', undefined, undefined]);

      const moved = await fs.rename('/home/user/a/file', '/home/user/new/deep/file', { uid: 1000, gid: 1000 });
      assert.deepEqual([moved.type, moved.size], ['file', 5]);
      assert.equal((await fs.stat('/home/user/new/deep')).uid, 1000, 'parents made for the destination, owned as asked');
      await assert.rejects(fs.rename('/home/user/none', '/home/user/x'), (e: unknown) => isCellaError(e, 'NOT_FOUND'));

      await run(vm.agent, 'mkdir -p /home/user/tree/x/y; for i in 1 2 3; do echo $i > /home/user/tree/x/y/f$i; done');
      await fs.remove('/home/user/tree');
      assert.equal(await fs.exists('/home/user/tree'), false);
      await fs.remove('/home/user/tree'); // missing: fine
      await fs.remove('/home/user/link'); // a symlink goes, not its target
      assert.equal(await fs.exists('/home/user/new/deep/file'), true);
    });
  });

  test("list walks to the depth asked, follows only the directory's own symlink, names entries by the path given", T, async () => {
    await withVm(async (vm) => {
      await run(
        vm.agent,
        `mkdir -p /srv/d/sub/deeper /srv/other; echo x > /srv/d/f; echo y > /srv/d/sub/g; echo z > /srv/d/sub/deeper/h;
        echo w > /srv/other/o; ln -s /srv/other /srv/d/lnk; ln -s /srv/d /srv/alias`,
      );
      const names = async (p: string, depth?: number): Promise<string[]> =>
        (await vm.agent.fs.list(p, depth === undefined ? {} : { depth })).map((e) => `${e.path}:${e.type}`).sort();
      assert.deepEqual(await names('/srv/d'), ['/srv/d/f:file', '/srv/d/lnk:symlink', '/srv/d/sub:directory']);
      assert.deepEqual(await names('/srv/d', 2), [
        '/srv/d/f:file',
        '/srv/d/lnk:symlink',
        '/srv/d/sub/deeper:directory',
        '/srv/d/sub/g:file',
        '/srv/d/sub:directory',
      ]);
      assert.deepEqual(await names('/srv/d/', 9), [
        '/srv/d/f:file',
        '/srv/d/lnk:symlink',
        '/srv/d/sub/deeper/h:file',
        '/srv/d/sub/deeper:directory',
        '/srv/d/sub/g:file',
        '/srv/d/sub:directory',
      ]);
      assert.deepEqual(await names('/srv/alias'), ['/srv/alias/f:file', '/srv/alias/lnk:symlink', '/srv/alias/sub:directory']);
      await assert.rejects(vm.agent.fs.list('/srv/none'), (e: unknown) => isCellaError(e, 'NOT_FOUND'));
      await assert.rejects(vm.agent.fs.list('/srv/d/f'), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && e.details.errno === 'ENOTDIR');
    });
  });

  test('a 16 MiB file written and read back in chunks, byte for byte; owner, mode and metadata as asked', T, async () => {
    await withVm(async (vm) => {
      const data = randomBytes(16 << 20);
      async function* pieces(): AsyncGenerator<Buffer> {
        for (let off = 0; off < data.length; off += 1 << 20) yield data.subarray(off, off + (1 << 20));
      }
      const written = await vm.agent.fs.write('/tmp/big/file.bin', pieces(), { uid: 1000, gid: 1000, mode: 0o640, metadata: { origin: 'test', k: 'v' } });
      assert.deepEqual([written.size, written.uid, written.mode & 0o777, written.metadata], [data.length, 1000, 0o640, { origin: 'test', k: 'v' }]);
      const { size, stream } = await vm.agent.fs.read('/tmp/big/file.bin');
      assert.equal(size, data.length);
      const hash = createHash('sha256');
      let chunks = 0;
      for await (const c of stream as AsyncIterable<Buffer>) {
        hash.update(c);
        chunks++;
      }
      assert.equal(hash.digest('hex'), createHash('sha256').update(data).digest('hex'));
      assert.ok(chunks > 16, 'it came in many pieces');
      // Rewriting truncates; an empty file reads empty.
      await vm.agent.fs.write('/tmp/big/file.bin', Buffer.alloc(0));
      assert.equal((await vm.agent.fs.readFile('/tmp/big/file.bin')).length, 0);
      await assert.rejects(vm.agent.fs.read('/tmp/big'), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && e.details.errno === 'EISDIR');
      await assert.rejects(vm.agent.fs.read('/tmp/none'), (e: unknown) => isCellaError(e, 'NOT_FOUND'));
      await assert.rejects(vm.agent.fs.write('/tmp/big', 'x'), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && e.details.errno === 'EISDIR');
      // A stream given up stops the guest: the connection stays usable.
      const half = await vm.agent.fs.read('/usr/bin/cella-demo');
      half.stream.destroy();
      await vm.agent.ping();
    });
  });

  test('a full file system in the guest is GUEST_DISK_FULL (ENOSPC)', T, async () => {
    await withVm(async (vm) => {
      await run(vm.agent, 'mkdir -p /mnt/small && mount -t tmpfs -o size=1m small /mnt/small');
      await assert.rejects(
        vm.agent.fs.write('/mnt/small/too-big', Buffer.alloc(4 << 20, 1)),
        (e: unknown) => isCellaError(e, 'GUEST_DISK_FULL') && e.httpStatus === 507 && e.details.errno === 'ENOSPC',
      );
      // The part that fitted stays (as envd leaves it); once it is gone there is room again.
      await vm.agent.fs.remove('/mnt/small/too-big');
      assert.equal((await vm.agent.fs.write('/mnt/small/fits', 'ok')).size, 2);
    });
  });

  test('a recursive watch sees a file made in a directory made after it started; errors for a missing path and a file', T, async () => {
    await withVm(async (vm) => {
      await run(vm.agent, 'mkdir -p /w/existing');
      const w = await vm.agent.fs.watch('/w', { recursive: true });
      const seen: string[] = [];
      w.on('event', (e: { op: string; name: string }) => seen.push(`${e.op} ${e.name}`));
      await run(
        vm.agent,
        'mkdir -p /w/new/inner && echo hi > /w/new/inner/file && echo x > /w/existing/f && chmod 600 /w/existing/f && mv /w/existing/f /w/existing/g && rm /w/existing/g',
      );
      await eventually(() => seen.includes('create new/inner/file') && seen.includes('remove existing/g'), 20_000, `events; seen ${JSON.stringify(seen)}`);
      for (const e of ['create new', 'create existing/f', 'write existing/f', 'chmod existing/f', 'rename existing/f', 'create existing/g'])
        assert.ok(seen.includes(e), `${e} in ${JSON.stringify(seen)}`);
      const flat = await vm.agent.fs.watch('/w');
      const flatSeen: string[] = [];
      flat.on('event', (e: { op: string; name: string }) => flatSeen.push(`${e.op} ${e.name}`));
      await run(vm.agent, 'echo 1 > /w/top; echo 2 > /w/new/not-seen');
      await eventually(() => flatSeen.includes('create top'), 20_000, 'the top-level event');
      await sleep(300);
      assert.ok(!flatSeen.some((e) => e.includes('not-seen')), 'a flat watch stays at the top');
      await w.close();
      await flat.close();
      await assert.rejects(vm.agent.fs.watch('/w/none'), (e: unknown) => isCellaError(e, 'NOT_FOUND'));
      await assert.rejects(vm.agent.fs.watch('/w/top'), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT') && e.details.errno === 'ENOTDIR');
    });
  });

  test('stats: CPUs, memory, disk, and CPU use since the last call', T, async () => {
    await withVm(async (vm) => {
      const a = await vm.agent.stats();
      assert.ok(
        a.cpuCount >= 1 && a.memTotal > 100 << 20 && a.memUsed > 0 && a.memUsed < a.memTotal && a.diskTotal > 0 && a.diskUsed > 0 && a.diskUsed <= a.diskTotal,
        JSON.stringify(a),
      );
      await run(vm.agent, 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done');
      const b = await vm.agent.stats();
      assert.ok(b.cpuUsedPct > 0 && b.cpuUsedPct <= 100, JSON.stringify(b));
    });
  });
});

describe('across connections', () => {
  /** Replaces the VM's control connection as a restarted cellad would. */
  async function reconnect(vm: RunningVm): Promise<AgentClient> {
    vm.agent.close();
    const agent = await AgentClient.connect(vmFiles(vm.dir).ctl);
    await agent.ping(20_000);
    return agent;
  }

  test('processes and terminals survive a new connection: listed, attached, their held output and exits delivered', T, async () => {
    const vm = await demo.engine.launch(demo.imageDir, demo.nextId());
    let agent: AgentClient | undefined;
    try {
      const cat = await vm.agent.spawn({ argv: ['/bin/cat'], label: 'survivor', env: { K: 'v' }, cwd: '/tmp' }, { stdin: 'pipe' });
      const chatty = await vm.agent.spawn(sh('sleep 2; echo held while nobody listened'), { stdin: 'none' });
      const quick = await vm.agent.spawn({ ...sh('sleep 1; exit 7'), label: 'quick' });
      const pty = await vm.agent.openPty({ argv: ['/bin/sh'], rows: 24, cols: 80 });
      await cat.write('before\n');

      agent = await reconnect(vm);
      await sleep(3000); // chatty prints and quick ends while no host holds them
      const list = await agent.listProcesses();
      const byId = new Map(list.map((p) => [p.id, p]));
      const info = byId.get(cat.id);
      assert.deepEqual(
        [info?.pid, info?.kind, info?.label, info?.argv, info?.env, info?.cwd, info?.status],
        [cat.pid, 'exec', 'survivor', ['/bin/cat'], { K: 'v' }, '/tmp', undefined],
      );
      assert.equal(byId.get(pty.id)?.kind, 'pty');
      assert.equal(byId.get(quick.id)?.status, 7 << 8, 'an exit while detached is kept');

      const cat2 = (await agent.attach(info as never)) as ExecProcess;
      const c = collect(cat2);
      await cat2.write('after\n');
      await eventually(() => c.text().includes('after'), 20_000, `cat's echo; got ${JSON.stringify(c.text())}`);
      await cat2.closeStdin();
      assert.equal((await c.exit).exitCode, 0);

      const chatty2 = collect(await agent.attach(byId.get(chatty.id) as never));
      assert.equal((await chatty2.exit).exitCode, 0);
      assert.equal(chatty2.text(), 'held while nobody listened\n', 'output made while detached was held, not lost');
      const quick2 = collect(await agent.attach(byId.get(quick.id) as never));
      assert.equal((await quick2.exit).exitCode, 7);

      const term = (await agent.attach(byId.get(pty.id) as never)) as PtySession;
      const t = collect(term);
      term.write('echo still-$((20+1))\r');
      await eventually(() => t.text().includes('still-21'), 20_000, `the terminal after the reconnect; got ${JSON.stringify(t.text())}`);
      const session = (await agent.listProcesses()).find((p) => p.id === pty.id);
      assert.ok(session && session.status === undefined, 'the shell still runs');
    } finally {
      agent?.close();
      await demo.engine.terminate(vm.ref);
    }
  });

  test('what no host claims within a minute of a new one arriving is given up: output drained and dropped, terminals hung up', T, async () => {
    const vm = await demo.engine.launch(demo.imageDir, demo.nextId());
    let agent: AgentClient | undefined;
    try {
      // More output than a pipe holds: held, it would block the writer for good.
      const writer = await vm.agent.spawn(sh('head -c 300000 /dev/zero; echo done > /tmp/writer-done'));
      const pty = await vm.agent.openPty({ argv: ['/bin/sleep', '1003'], rows: 24, cols: 80 });
      agent = await reconnect(vm);
      const a = agent;
      await sleep(5000);
      assert.equal(await a.fs.exists('/tmp/writer-done'), false, 'held while the grace runs');
      const gone = async (): Promise<boolean> => {
        const list = await a.listProcesses();
        const w = list.find((p) => p.id === writer.id);
        const t = list.find((p) => p.id === pty.id);
        return w?.status !== undefined && t?.status !== undefined;
      };
      for (let i = 0; !(await gone()); i++) {
        assert.ok(i < 120, 'given up within the grace and a little');
        await sleep(1000);
      }
      assert.equal(await a.fs.exists('/tmp/writer-done'), true, 'the writer ran to its end');
      const t = (await a.listProcesses()).find((p) => p.id === pty.id);
      assert.equal((t?.status ?? 0) & 0x7f, 1, 'the terminal was hung up (SIGHUP)');
    } finally {
      agent?.close();
      await demo.engine.terminate(vm.ref);
    }
  });

  test('a process and a terminal survive suspend and resume', T, async () => {
    const vm = await demo.engine.launch(demo.imageDir, demo.nextId());
    let back: RunningVm | undefined;
    try {
      const cat = await vm.agent.spawn({ argv: ['/bin/cat'] }, { stdin: 'pipe' });
      const pty = await vm.agent.openPty({ argv: ['/bin/sh'], rows: 24, cols: 80 });
      await demo.engine.suspend(vm);
      back = await demo.engine.resume(vm.ref);
      const list = await back.agent.listProcesses();
      const catInfo = list.find((p) => p.id === cat.id);
      const ptyInfo = list.find((p) => p.id === pty.id);
      assert.ok(catInfo && ptyInfo, `both listed: ${JSON.stringify(list)}`);
      const cat2 = (await back.agent.attach(catInfo)) as ExecProcess;
      const c = collect(cat2);
      await cat2.write('resumed\n');
      await eventually(() => c.text() === 'resumed\n', 20_000, 'the echo after resume');
      const term = (await back.agent.attach(ptyInfo)) as PtySession;
      const tc = collect(term);
      term.write('echo term-$((40+2))\r');
      await eventually(() => tc.text().includes('term-42'), 20_000, `the terminal after resume; got ${JSON.stringify(tc.text())}`);
      term.close();
      assert.equal((await tc.exit).signal, 1);
    } finally {
      await demo.engine.terminate((back ?? vm).ref);
    }
  });
});
